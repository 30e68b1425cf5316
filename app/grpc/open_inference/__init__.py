"""The Open Inference Protocol (KServe v2) over gRPC: the one proto and its message classes, which
the service (`app.grpc`) answers with and the client (`mnist_client`) calls with."""
