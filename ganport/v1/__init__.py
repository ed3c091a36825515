"""Generated gRPC stubs for the ganport v1 API (never edit; run ``scripts/gen_protos.py``).

Modules:
    ``generator_pb2`` / ``generator_pb2_grpc``: the ``ganport.v1.GeneratorService`` API.
    ``kserve_pb2`` / ``kserve_pb2_grpc``: the KServe v2 ``inference.GRPCInferenceService``
    subset. Not imported by ganport itself: it registers ``inference.*`` names in protobuf's
    default descriptor pool, which clash with tritonclient's identical names in one process.
    ``kserve_descriptor`` holds the same file serialized; the server builds its KServe messages
    from it in a private pool (``ganport.runtime.server.kserve.messages`` / ``KServeStub``).

Example:
    >>> from ganport.v1 import generator_pb2, generator_pb2_grpc
    >>> request = generator_pb2.GenerateRequest(model="digits", count=4, seed=3)
"""
