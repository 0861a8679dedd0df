import base64, json
from websockets.sync.client import connect
auth = "Basic " + base64.b64encode(b"admin:admin-password").decode()
with connect("ws://127.0.0.1:9670/Dog/1?omitCurrent", additional_headers={"Authorization": auth}, max_size=None) as ws:
    print(ws.recv(timeout=3)[:100])
    for size in (20 * 2**20, 70 * 2**20):
        try:
            ws.send(json.dumps("x" * size))
            print(size, ws.recv(timeout=20)[:200])
        except Exception as e:
            print(size, "->", type(e).__name__, e)
            break
