"""pip's --report of the image's resolved set -> requirements.txt pins of every package but rfau:
the builder stage installs these first (a layer that changes only when the set does), then rfau's
own wheel on top.   python3 infra/docker/wheelhouse-requirements.py REPORT.json > requirements.txt"""

import json
import sys

report = json.load(open(sys.argv[1]))
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    meta = item["metadata"]
    if meta["name"] != "rfau":
        print(f"{meta['name']}=={meta['version']}")
