"""The remote agent: measure ONNX models on an edge device for a search running elsewhere.

`server` is the HTTP service started by ``slimdeploy agent`` on the device (stdlib and the
onnxruntime plugin only, never torch); `client` is the ``remote`` runtime plugin the searching
host uses (``--runtime remote:http://HOST:PORT``). Nothing is imported here, so that
``python -c "from slimdeploy.agent.worker import worker_main"`` stays light.
"""
