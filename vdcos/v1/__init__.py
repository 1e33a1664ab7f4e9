"""Generated gRPC/protobuf code for vdcos.v1 (built from proto/ by `make proto`)."""
