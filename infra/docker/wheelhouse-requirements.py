"""pip's --report of the image's resolved set -> requirements.txt pins of every package but rfau:
the builder stage installs these first (a layer that changes only when the set does), then rfau's
own wheel on top. The file is rewritten only when its text changes: podman's build cache also
looks at a copied file's time.   python3 infra/docker/wheelhouse-requirements.py REPORT.json OUT"""

import json
import sys
from pathlib import Path

report = json.loads(Path(sys.argv[1]).read_text())
pins = sorted(
    f"{i['metadata']['name']}=={i['metadata']['version']}"
    for i in report["install"]
    if i["metadata"]["name"] != "rfau"
)
out = Path(sys.argv[2])
text = "\n".join(sorted(pins, key=str.lower)) + "\n"
if not out.is_file() or out.read_text() != text:
    out.write_text(text)
