"""The Xet protocol, server side (huggingface.co/docs/xet): what ``huggingface_hub`` with ``hf_xet``
uses by default to upload and download large files.

Design: Xet's chunks are not the store's chunks. The store cuts files with FastCDC (``pyfastcdc``,
64 KiB average) and names chunks by plain BLAKE3; Xet cuts with a gearhash CDC of its own constants
and names chunks by keyed BLAKE3. Making Xet's chunking the store's own would need a fast gearhash
chunker on both the node and the native client (``hf_xet`` exposes only whole-file hashing, and a
pure-Python gearhash runs at a few MB/s) and a new ``iollm/2`` chunk format for every store. Instead,
a file uploaded through Xet is verified chunk by chunk, assembled once, and stored with the store's
own chunker, like an LFS upload (see ``service``): one copy of the bytes, the same SHA-256 and the same
chunks whichever protocol brought them, so a native push of that file sends nothing. What Xet keeps
is an index (Xet chunk -> offset in a stored file) to serve xorb ranges and let later Xet uploads
reference earlier xorbs (hf_xet's own shard cache dedups a second version against the first).

Global dedup (``GET /v1/chunks/{prefix}/{chunk}``) answers as the Hub does, so a client with an empty
shard cache still dedups against xorbs other uploads put here. The node indexes the chunks ``hf_xet``
asks about (hash eligible by Xet's modulo-1024 rule, or the first chunk of a recorded file); the
answer is a complete shard (``shard_writer``: empty file section, the xorbs, lookup tables, footer)
listing the xorbs that hold the chunk, then the ones that follow them in their files, only those the
caller may reference (sent them, or can read a file recorded from them: the rule shard uploads obey),
with every chunk hash keyed by a fresh random HMAC key and an expiry of a day. Anything else: 404.
"""

from .routes import router, xet_headers, xet_store_of
from .service import XetStore

__all__ = ["XetStore", "router", "xet_headers", "xet_store_of"]
