"""Fleet: many cameras over a Ray cluster, one aggregated keypoint stream (docs/fleet.md).

Runtime layer: it uses core and the pipeline; Ray is only the control plane (placement, restarts,
status calls), frames stay in each node's shared memory and keypoints travel over ZMQ.
"""
