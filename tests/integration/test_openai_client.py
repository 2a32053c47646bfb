# SPDX-License-Identifier: MIT
"""A real OpenAI client library (the `openai` npm package) streams a chat
completion through the gateway: the model name picks the workload, which
starts on the request, and the chunks arrive as the server writes them."""
from jsclients import run_node
from test_gateway import config



def test_openai_client_streams_through_gateway(daemon):
    d = daemon(config({"name": "chat", "chunks": 5, "delay": "300ms"}))
    assert d.state("chat") == "stopped"
    out = run_node("openai-stream.mjs", d.url + "/v1", "chat-model")
    assert d.state("chat") == "ready"
    assert out["chunks"] == 5
    assert out["text"]
    assert out["finishReason"] == "stop"
    # The first chunk comes long before the last (5 chunks, 300 ms apart).
    assert out["totalMs"] - out["firstChunkMs"] >= 900, out
