"""Triton kernels for CUDA (also runnable on CPU under TRITON_INTERPRET=1).

Importing `normlab.kernels.triton.ops` imports Triton and registers the custom ops
`normlab::norm_fwd`, `norm_bwd`, `dyt_fwd`, `dyt_bwd`, `derf_fwd`, `derf_bwd`, `gated_fwd` and
`gated_bwd`; the dispatch does that only when a call needs the Triton backend.
"""
