#!/usr/bin/env python3
"""Make the fixtures the COCO evaluator (src/detect/cocoeval.rs) is checked against.

Each case is a small detection set (images, annotations, categories) and a prediction set, with
the 12 numbers pycocotools' COCOeval gives for it. Run once by hand after changing a case (not in
CI; it needs pycocotools, which `scripts/setup.sh` installs into .venv/):

    .venv/bin/python scripts/coco-fixtures.py

It writes tests/fixtures/coco/<case>.json = {images, annotations, categories, detections, stats}.
Boxes are rounded to two decimals so the files stay small and both sides read the same numbers.
"""

import contextlib
import copy
import json
import random
import sys
from pathlib import Path

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "coco"


def coco_stats(dataset, detections):
    """COCOeval's 12 summary numbers; pycocotools' own chatter goes to stderr."""
    with contextlib.redirect_stdout(sys.stderr):
        gt = COCO()
        gt.dataset = copy.deepcopy(dataset)
        gt.createIndex()
        if detections:
            dt = gt.loadRes(copy.deepcopy(detections))
        else:
            # loadRes cannot take an empty list (it reads the first entry): an empty result set
            # is a COCO object with the images and categories and no annotations.
            dt = COCO()
            dt.dataset = {
                "images": copy.deepcopy(dataset["images"]),
                "categories": copy.deepcopy(dataset["categories"]),
                "annotations": [],
            }
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


def r2(x):
    return round(x, 2)


class Scene:
    """A growing ground-truth set with COCO ids (annotation ids from 1: COCOeval treats id 0 as unmatched)."""

    def __init__(self, categories, image_ids):
        self.images = [{"id": i, "width": 640, "height": 480, "file_name": f"{i}.png"} for i in image_ids]
        self.categories = [{"id": c, "name": f"c{c}"} for c in categories]
        self.annotations = []

    def box(self, image_id, category_id, bbox, iscrowd=0, area=None):
        bbox = [r2(v) for v in bbox]
        self.annotations.append(
            {
                "id": len(self.annotations) + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": bbox,
                "area": r2(bbox[2] * bbox[3]) if area is None else r2(area),
                "iscrowd": iscrowd,
            }
        )

    def dataset(self):
        return {"images": self.images, "annotations": self.annotations, "categories": self.categories}


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": [r2(v) for v in bbox], "score": r2(score)}


def jitter(rng, bbox, amount):
    x, y, w, h = bbox
    return [
        x + rng.uniform(-amount, amount) * w,
        y + rng.uniform(-amount, amount) * h,
        max(1.0, w * (1 + rng.uniform(-amount, amount))),
        max(1.0, h * (1 + rng.uniform(-amount, amount))),
    ]


def random_box(rng, lo, hi):
    w = rng.uniform(lo, hi)
    h = rng.uniform(lo, hi)
    return [rng.uniform(0, 640 - w), rng.uniform(0, 480 - h), w, h]


def random_scene(rng, image_ids, categories, per_image, lo=4, hi=200, crowd_rate=0.0):
    scene = Scene(categories, image_ids)
    for i in image_ids:
        for _ in range(rng.randint(*per_image)):
            scene.box(i, rng.choice(categories), random_box(rng, lo, hi), int(rng.random() < crowd_rate))
    return scene


def case_perfect(rng):
    scene = random_scene(rng, [3, 8, 21, 40], [1, 2, 5], (1, 6))
    dets = [det(a["image_id"], a["category_id"], a["bbox"], 1.0) for a in scene.annotations]
    return scene, dets


def case_empty(rng):
    scene = random_scene(rng, [1, 2, 3], [1, 2], (1, 4))
    return scene, []


def case_shuffled_scores(rng):
    # Good boxes and bad ones with scores unrelated to quality: precision is not monotone in rank.
    scene = random_scene(rng, list(range(10, 22)), [1, 2, 3], (1, 5))
    dets = []
    for a in scene.annotations:
        dets.append(det(a["image_id"], a["category_id"], jitter(rng, a["bbox"], 0.08), rng.random()))
        if rng.random() < 0.5:
            dets.append(det(a["image_id"], a["category_id"], jitter(rng, a["bbox"], 0.4), rng.random()))
    for i in range(10, 22):
        for _ in range(rng.randint(0, 3)):
            dets.append(det(i, rng.choice([1, 2, 3]), random_box(rng, 4, 200), rng.random()))
    return scene, dets


def case_duplicates(rng):
    # Each object predicted 1-3 times; equal scores (ties) for some copies, and exact duplicate boxes.
    scene = random_scene(rng, [5, 6, 7, 9], [1, 2], (2, 5))
    dets = []
    for a in scene.annotations:
        s = rng.choice([0.9, 0.8, 0.5])
        b = jitter(rng, a["bbox"], 0.05)
        dets.append(det(a["image_id"], a["category_id"], b, s))
        for _ in range(rng.randint(0, 2)):
            dets.append(det(a["image_id"], a["category_id"], rng.choice([b, jitter(rng, a["bbox"], 0.1)]), rng.choice([s, s - 0.1])))
    # Two ground-truth copies of the same box: which one a detection takes is decided by order.
    scene.box(9, 1, [100, 100, 50, 60])
    scene.box(9, 1, [100, 100, 50, 60])
    dets.append(det(9, 1, [101, 100, 50, 60], 0.7))
    dets.append(det(9, 1, [100, 101, 50, 60], 0.7))
    dets.append(det(9, 1, [100, 100, 50, 60], 0.7))
    return scene, dets


def case_crowd(rng):
    # Crowd regions with several detections inside: matched to the crowd (ignored, repeatedly),
    # IoU against a crowd = intersection / detection area.
    scene = Scene([1, 2], [1, 2, 3, 4, 5, 6])
    scene.box(1, 1, [10, 10, 300, 200], iscrowd=1)
    scene.box(1, 1, [20, 20, 40, 40])
    scene.box(1, 1, [400, 300, 80, 60])
    scene.box(2, 2, [0, 0, 200, 200], iscrowd=1)
    scene.box(2, 1, [50, 50, 30, 30], iscrowd=1)
    scene.box(2, 2, [300, 100, 60, 90])
    scene.box(3, 1, [100, 100, 100, 100])
    dets = [
        det(1, 1, [21, 20, 40, 41], 0.95),
        det(1, 1, [50, 50, 60, 60], 0.9),
        det(1, 1, [100, 80, 50, 50], 0.85),
        det(1, 1, [200, 150, 150, 100], 0.6),
        det(1, 1, [402, 298, 80, 62], 0.5),
        det(1, 1, [500, 400, 30, 30], 0.4),
        det(2, 2, [10, 10, 50, 50], 0.99),
        det(2, 2, [150, 150, 100, 100], 0.7),
        det(2, 2, [302, 101, 58, 90], 0.65),
        det(2, 1, [55, 55, 20, 20], 0.8),
        det(2, 1, [40, 40, 50, 50], 0.3),
        det(3, 1, [100, 100, 100, 100], 0.2),
        det(3, 1, [130, 130, 100, 100], 0.9),
    ]
    # And a random crowd-heavy part on images 4-6.
    extra = random_scene(rng, [4, 5, 6], [1, 2], (2, 4), crowd_rate=0.4)
    for a in extra.annotations:
        scene.box(a["image_id"], a["category_id"], a["bbox"], a["iscrowd"])
        for _ in range(3 if a["iscrowd"] else 1):
            dets.append(det(a["image_id"], a["category_id"], jitter(rng, a["bbox"], 0.15), rng.random()))
    return scene, dets


def case_category_without_gt(rng):
    # Category 4 has detections and no ground truth (excluded from every mean); category 7 has neither.
    scene = random_scene(rng, [1, 2, 3, 4], [1, 2], (1, 4))
    scene.categories += [{"id": 4, "name": "c4"}, {"id": 7, "name": "c7"}]
    dets = [det(a["image_id"], a["category_id"], jitter(rng, a["bbox"], 0.1), rng.random()) for a in scene.annotations]
    dets += [det(rng.choice([1, 2, 3, 4]), 4, random_box(rng, 10, 100), rng.random()) for _ in range(6)]
    return scene, dets


def case_area_ranges(rng):
    # Objects of all three sizes, some near the 32² and 96² edges, some whose annotated area differs
    # from w·h (a segment's area): the gt range goes by `area`, the detection's by w·h.
    scene = Scene([1, 2], [1, 2, 3, 4, 5])
    dets = []
    for i in [1, 2, 3, 4, 5]:
        for lo, hi in [(4, 30), (30, 34), (34, 90), (94, 98), (100, 250)]:
            b = random_box(rng, lo, hi)
            area = b[2] * b[3] * (rng.uniform(0.5, 1.0) if rng.random() < 0.3 else 1.0)
            c = rng.choice([1, 2])
            scene.box(i, c, b, area=area)
            if rng.random() < 0.85:
                dets.append(det(i, c, jitter(rng, b, 0.12), rng.random()))
        for _ in range(3):
            dets.append(det(i, rng.choice([1, 2]), random_box(rng, 4, 150), rng.random() * 0.5))
    # Boxes whose annotated area falls in another range than their w·h, found and missed.
    for i, (w, h, area) in enumerate([(40, 40, 900), (100, 100, 8000), (30, 30, 1100), (90, 90, 9300)]):
        scene.box(1 + i, 1, [300, 300, w, h], area=area)
        scene.box(2 + i, 2, [400, 50, w, h], area=area)
        dets.append(det(1 + i, 1, [301, 300, w, h], 0.6))
    return scene, dets


def case_many_dets(rng):
    # More than 100 detections on an image and category: only the 100 best-scored count, and
    # maxDets 1 and 10 cut harder. The good boxes sit at low scores on image 2.
    scene = Scene([1, 2], [1, 2])
    dets = []
    for i in [1, 2]:
        for _ in range(30):
            scene.box(i, 1, random_box(rng, 10, 120))
        scene.box(i, 2, random_box(rng, 10, 120))
    for a in scene.annotations:
        good = 0.05 + 0.1 * rng.random() if a["image_id"] == 2 else 0.5 + 0.5 * rng.random()
        dets.append(det(a["image_id"], a["category_id"], jitter(rng, a["bbox"], 0.05), good))
    for i in [1, 2]:
        for _ in range(130):
            dets.append(det(i, 1, random_box(rng, 10, 120), 0.2 + 0.6 * rng.random()))
    return scene, dets


def case_jitter(rng):
    # A realistic mix: many images and categories, jittered boxes, misses, false positives, crowds.
    cats = [1, 2, 3, 4, 6]
    scene = random_scene(rng, list(range(100, 140)), cats, (0, 6), lo=5, hi=220, crowd_rate=0.05)
    dets = []
    for a in scene.annotations:
        if rng.random() < 0.8:
            q = rng.uniform(0.0, 0.3)
            dets.append(det(a["image_id"], a["category_id"], jitter(rng, a["bbox"], q), 1 - q + rng.uniform(-0.2, 0.2)))
        if rng.random() < 0.1:
            dets.append(det(a["image_id"], rng.choice(cats), jitter(rng, a["bbox"], 0.1), rng.random()))
    for i in range(100, 140):
        for _ in range(rng.randint(0, 4)):
            dets.append(det(i, rng.choice(cats), random_box(rng, 5, 220), rng.random() * 0.7))
    return scene, dets


CASES = {
    "perfect": case_perfect,
    "empty": case_empty,
    "shuffled_scores": case_shuffled_scores,
    "duplicates": case_duplicates,
    "crowd": case_crowd,
    "category_without_gt": case_category_without_gt,
    "area_ranges": case_area_ranges,
    "many_dets": case_many_dets,
    "jitter": case_jitter,
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for seed, (name, make) in enumerate(CASES.items()):
        scene, dets = make(random.Random(1000 + seed))
        dataset = scene.dataset()
        stats = coco_stats(dataset, dets)
        fixture = dict(dataset, detections=dets, stats=stats)
        path = OUT / f"{name}.json"
        path.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
        print(f"{path.name}: {len(dataset['annotations'])} gt, {len(dets)} dets, AP {stats[0]:.4f} AP50 {stats[1]:.4f}")


if __name__ == "__main__":
    main()
