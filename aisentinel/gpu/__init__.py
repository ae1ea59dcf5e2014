"""GPUs as a security signal: NVML sampling, process attribution, Xid errors.

``sampler.GpuSampler`` reads every GPU and its processes through pynvml;
``attribution.ProcessAttributor`` says who runs a GPU process (executable, user,
systemd unit, container); ``xid`` parses kernel Xid lines and watches NVML's event
API; ``topn.bound_processes`` keeps label cardinality bounded.
"""
