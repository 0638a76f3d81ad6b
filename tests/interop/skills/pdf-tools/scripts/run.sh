#!/usr/bin/env bash
# Convert every PDF in the current folder to text.
set -euo pipefail
for f in *.pdf; do pdftotext -layout "$f" "${f%.pdf}.txt"; done
