#!/usr/bin/env python3
"""pycocotools' COCO bbox mAP of a results file, for cross-checking makd's own evaluator.

    .venv/bin/python scripts/coco-map.py ANNOTATIONS.json RESULTS.json

ANNOTATIONS.json is COCO detection JSON (for example from `makd data export`), RESULTS.json a COCO
results list (`makd eval --detections-out`). Prints COCOeval's 12 summary numbers as one JSON
object, named as makd's CocoMetrics: fractions in [0, 1], -1 where a setting has no ground truth.
pycocotools' progress lines go to stderr. Needs pycocotools (`scripts/setup.sh` installs it).
"""

import contextlib
import json
import sys

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

FIELDS = [
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "ar1",
    "ar10",
    "ar100",
    "ar_small",
    "ar_medium",
    "ar_large",
]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: coco-map.py ANNOTATIONS.json RESULTS.json")
    annotations, results = sys.argv[1], sys.argv[2]
    with open(results) as f:
        detections = json.load(f)
    if not isinstance(detections, list):
        sys.exit(f"{results}: expected a JSON list of {{image_id, category_id, bbox, score}}")
    with contextlib.redirect_stdout(sys.stderr):
        gt = COCO(annotations)
        if detections:
            dt = gt.loadRes(detections)
        else:
            # loadRes reads the first entry and fails on an empty list; no detections is a result
            # set with the images and categories and no annotations, which COCOeval scores as it
            # would any other (0 where there is ground truth, -1 where there is none).
            dt = COCO()
            dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    print(json.dumps(dict(zip(FIELDS, (float(s) for s in ev.stats)))))


if __name__ == "__main__":
    main()
