"""The two ends of the check protocol that share code.

``wire`` is the codec both ends use (the tags of encoded values, tensors as ``torch.save``
bytes read back with the safe loader); ``kernel`` is the kernel's end: the grader copies this
package into the student's kernel, imports it there and calls ``kernel.install``. Neither module
imports anything from the rest of the grader, since inside the kernel there is no grader.
"""
