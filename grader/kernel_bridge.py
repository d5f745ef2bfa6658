"""Kernel side of the check protocol.

This file is not imported by the grader: its source is sent to the student's kernel after the
notebook ran, and defines one name there, ``__grader_bridge__``. The grader then sends requests
as JSON text; the bridge builds the arguments (tensors, module specs), calls the student's
function, and displays the result under a private MIME type as JSON, tensors inside encoded with
``torch.save`` (the grader reads them back with ``torch.load(weights_only=True)``).

Everything here runs in untrusted territory: the student may have replaced any of it. That is
fine by design: the grader trusts nothing it receives beyond "this is data".
"""


LAYER_FIELDS_JSON = "{}"


def __grader_make_bridge(layer_fields_json):  # noqa: N807 - private name inside the student's namespace
    import base64
    import io
    import json
    import sys
    import time
    import traceback

    from IPython import get_ipython
    from IPython.display import display

    mime = "application/vnd.nncourse.grader+json"
    user_ns = get_ipython().user_ns

    def tensor_to_b64(t):
        import torch

        buf = io.BytesIO()
        torch.save(t.detach().cpu().clone(), buf)
        return base64.b64encode(buf.getvalue()).decode("ascii")

    def tensor_from_b64(text):
        import torch

        return torch.load(io.BytesIO(base64.b64decode(text)), weights_only=True)

    def probes():
        import torch
        from torch import nn

        class Sleep(nn.Module):
            def __init__(self, ms=1.0):
                super().__init__()
                self.ms = float(ms)

            def forward(self, x):
                time.sleep(self.ms / 1000.0)
                return x

        class CallCounter(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

            def forward(self, x):
                self.calls += 1
                return x

        return {"Sleep": Sleep, "CallCounter": CallCounter}

    def build_module(spec):
        import torch
        from torch import nn

        kind, name = spec["kind"], spec["name"]
        args = [decode(a) for a in spec.get("args", [])]
        kwargs = {k: decode(v) for k, v in spec.get("kwargs", {}).items()}
        if kind == "layer":
            module = getattr(nn, name)(*args, **kwargs)
        elif kind == "seq":
            module = nn.Sequential(*args)
        elif kind == "kit":
            import nncourse

            module = getattr(nncourse, name)(*args, **kwargs)
        elif kind == "probe":
            module = probes()[name](*args, **kwargs)
        else:
            raise ValueError(f"unknown module spec kind {kind!r}")
        if spec.get("state_dict") is not None:
            state = {k: tensor_from_b64(v) for k, v in spec["state_dict"].items()}
            module.load_state_dict(state)
        if spec.get("seed") is not None:
            torch.manual_seed(spec["seed"])
        module.train(bool(spec.get("training", False)))
        return module

    def decode(v):
        if isinstance(v, list):
            return [decode(x) for x in v]
        if isinstance(v, dict):
            if "__tuple__" in v:
                return tuple(decode(x) for x in v["__tuple__"])
            if "__tensor__" in v:
                return tensor_from_b64(v["__tensor__"])
            if "__module__" in v:
                return build_module(v["__module__"])
            if "__dict__" in v:
                return {k: decode(x) for k, x in v["__dict__"].items()}
            raise ValueError(f"unknown encoded value with keys {sorted(v)}")
        return v

    # which constructor arguments describe each layer type: filled in by the grader from
    # grader.protocol.REBUILDABLE when it sends this file (see protocol.bridge_source)
    layer_fields = json.loads(layer_fields_json)

    def plain(x):
        if isinstance(x, (list, tuple)):
            return {"__tuple__": [plain(i) for i in x]}
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        return str(x)

    def describe_module(module):
        layers = []
        for name, sub in module.named_modules():
            type_name = type(sub).__name__
            fields = [f for f in layer_fields.get(type_name, ()) if f != "bias"]
            config = {f: plain(getattr(sub, f, None)) for f in fields}
            if "bias" in layer_fields.get(type_name, ()):
                bias = getattr(sub, "bias", None)
                config["bias"] = (bias() if callable(bias) else bias) is not None
            layers.append({"name": name, "type": type_name, "module": type(sub).__module__,
                           "config": config, "training": bool(sub.training)})
        # one torch.save blob: quantized modules keep tuples and dtypes in their state_dict
        buf = io.BytesIO()
        torch = sys.modules["torch"]
        state = module.state_dict()
        plain_state = type(state)((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v)
                                  for k, v in state.items())
        # module versions: a quantized Linear reads its weights by the layout version
        plain_state._metadata = getattr(state, "_metadata", None)
        torch.save(plain_state, buf)
        state = base64.b64encode(buf.getvalue()).decode("ascii")
        return {"__module__": {"layers": layers, "state_dict": state}}

    def encode(v, depth=0):
        # torch only if the notebook imported it: a plain value needs no 2-second import
        torch = sys.modules.get("torch")
        if depth > 20:
            raise ValueError("result nested too deeply")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v)
        if torch is not None and isinstance(v, torch.Tensor):
            return {"__tensor__": tensor_to_b64(v)}
        if torch is not None and isinstance(v, torch.nn.Module):
            return describe_module(v)
        if isinstance(v, tuple):
            return {"__tuple__": [encode(x, depth + 1) for x in v]}
        if isinstance(v, list):
            return [encode(x, depth + 1) for x in v]
        if isinstance(v, dict):
            return {"__dict__": {str(k): encode(x, depth + 1) for k, x in v.items()}}
        # numpy scalars and arrays, without importing numpy when it is not there
        if hasattr(v, "item") and hasattr(v, "shape") and v.shape == ():
            return encode(v.item(), depth + 1)
        if hasattr(v, "shape") and hasattr(v, "dtype") and hasattr(v, "tolist"):
            import torch

            return {"__tensor__": tensor_to_b64(torch.as_tensor(v))}
        raise TypeError(f"cannot send a {type(v).__name__} back to the grader")

    def reply(payload):
        display({mime: json.dumps(payload)}, raw=True)

    def failure(exc):
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return {"ok": False, "error": text, "traceback": tb[-4000:]}

    def call(request_json):
        request = json.loads(request_json)
        try:
            args = [decode(a) for a in request["args"]]
            kwargs = {k: decode(v) for k, v in request["kwargs"].items()}
        except BaseException as exc:  # a grader-side spec error, reported as such
            reply({"ok": False, "grader_error": True, **failure(exc)})
            return
        try:
            if request.get("source") is not None:
                namespace = dict(user_ns)
                exec(request["source"], namespace)
                fn = namespace["drive"]
            else:
                fn = user_ns.get(request["name"])
                if fn is None:
                    raise NameError(f"name {request['name']!r} is not defined in the notebook")
            result = fn(*args, **kwargs)
            payload = {"ok": True, "value": encode(result)}
            if request.get("inspect"):
                payload["args_after"] = [encode(a) for a in args]
        except BaseException as exc:  # the student's error, reported back as text
            payload = failure(exc)
        reply(payload)

    return call


__grader_bridge__ = __grader_make_bridge(LAYER_FIELDS_JSON)
del __grader_make_bridge, LAYER_FIELDS_JSON
