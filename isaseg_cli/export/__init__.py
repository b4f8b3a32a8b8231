"""Export of the network to deployable formats (ONNX); torch is needed only here, at export."""
