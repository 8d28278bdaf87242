"""A worker in front of a local server (ComfyUI, A1111): start it at import, poll until it
answers, then proxy each job to it."""

import json
import socket
import subprocess
import sys
import time
import urllib.request

import runpod

SERVER = r'''
import json, os, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer

def orphaned(parent=os.getppid()):
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)  # the worker that started it is gone

threading.Thread(target=orphaned, daemon=True).start()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = json.dumps({"upper": body["text"].upper(), "length": len(body["text"])})
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.end_headers(); self.wfile.write(answer.encode())
    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    PORT = probe.getsockname()[1]
URL = f"http://127.0.0.1:{PORT}"

server = subprocess.Popen([sys.executable, "-c", SERVER, str(PORT)])


def check_server(url, retries=500, delay=0.05):
    for _ in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if answer.status == 200:
                    print("runpod-worker - API is reachable")
                    return True
        except OSError:
            pass
        time.sleep(delay)
    print(f"runpod-worker - Failed to connect to server at {url} after {retries} attempts.")
    return False


def handler(job):
    request = urllib.request.Request(
        URL + "/run", data=json.dumps(job["input"]).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


if __name__ == "__main__":
    check_server(URL)
    runpod.serverless.start({"handler": handler})
