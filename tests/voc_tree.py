"""A small VOC tree for tests: annotations and a train split (images are the caller's)."""

from pathlib import Path

XML = """<annotation><filename>{i}.jpg</filename><size><width>300</width><height>200</height>
<depth>3</depth></size>{objects}</annotation>"""
OBJ = "<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
OBJ += "<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def make_voc(root: Path, images: dict[str, list[tuple[str, int, tuple]]], prefix: str = "") -> Path:
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i, objs in images.items():
        body = "".join(OBJ.format(n=n, d=d, b=b) for n, d, b in objs)
        (root / "Annotations" / f"{i}.xml").write_text(prefix + XML.format(i=i, objects=body))
    (root / "ImageSets/Main/train.txt").write_text("\n".join(images) + "\n")
    return root
