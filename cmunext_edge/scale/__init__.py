"""Scale-out: Ray Data batch segmentation (ray_batch) and a Ray Serve HTTP endpoint (serve).
Both need the `ray` extra: pip install "cmunext-edge[ray]"."""
