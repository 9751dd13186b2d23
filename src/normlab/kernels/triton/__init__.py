"""Triton kernels for CUDA (also runnable on CPU under TRITON_INTERPRET=1).

Importing `normlab.kernels.triton.ops` imports Triton and registers the custom ops
`normlab::norm_fwd`, `normlab::norm_bwd`, `normlab::dyt_fwd` and `normlab::dyt_bwd`; the
dispatch does that only when a call needs the Triton backend.
"""
