"""The Open Inference Protocol (KServe v2) over gRPC, served beside HTTP from the same state."""
