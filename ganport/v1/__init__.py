"""Generated gRPC stubs for the ganport v1 API (never edit; run ``scripts/gen_protos.py``).

Modules:
    ``generator_pb2`` / ``generator_pb2_grpc``: the ``ganport.v1.GeneratorService`` API.
    ``kserve_pb2`` / ``kserve_pb2_grpc``: the KServe v2 ``inference.GRPCInferenceService``
    subset. Imported only on demand: it registers ``inference.*`` names in protobuf's default
    descriptor pool, which clash with other libraries that register them too (tritonclient).

Example:
    >>> from ganport.v1 import generator_pb2, generator_pb2_grpc
    >>> request = generator_pb2.GenerateRequest(model="digits", count=4, seed=3)
"""
