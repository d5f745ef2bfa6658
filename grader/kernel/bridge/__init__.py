"""What runs inside the sandbox, copied there as the package ``_grader_bridge``: nothing here
imports the rest of the grader, since inside the sandbox there is none.

- ``wire``: the codec both ends of the check protocol share (the tags of encoded values,
  tensors as ``torch.save`` bytes read back with the safe loader);
- ``kernel_end``: the kernel's end of the protocol, installed in each student kernel after its
  notebook ran (``kernel_end.install``);
- ``serve``: the zygote, the kernels' fork server (``python -m _grader_bridge.serve``);
- ``jail``: the Linux primitives a forked kernel or judge enters its namespaces with.
"""
