"""The HTTP service (``spc-fast serve``): the pipeline behind LitServe with dynamic batching.

``api`` (the LitAPI: decode, batched ``Pipeline.enhance``, encode; per-request errors) → ``edge`` (the ASGI
middleware in front: admission bound, limits, content types, ``/metrics``) → ``server`` (flags, ``main``).
Importing this package imports neither LitServe nor the pipeline.
"""
