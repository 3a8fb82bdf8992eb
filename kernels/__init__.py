"""Triton kernels of maven_fast (installed as ``maven_fast.kernels``).

Importing a module here imports triton. Without a GPU, set TRITON_INTERPRET=1
before the import to run the kernels in Triton's CPU interpreter (tests do).
"""
