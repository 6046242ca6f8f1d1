"""Cut the chapters (converted to scripts in .gpu/ by ../shared/gpu/prepare.sh) into the record runs of
tools/gpu/run.sh: each chapter up to the section after its records, chapter 7 in two (Deep Compression; the chain).

Chapters 1, 2 and 3, chapter 5 but for its channel pruning, chapter 7's Deep Compression and chapter 8 train MLPs and
small CNNs on MNIST, which a CPU can record at `gpu` scale (see each record's device); so could chapter 6, in about
45 minutes a seed on 2 cores. The GPU is for the ResNets on CIFAR-10 (chapter 4, chapter 7's chain) and chapter 9.
Chapter 5's channel pruning trains a CNN on CIFAR-10 (05_channels); rec05 records it with the rest of chapter 5,
re-recording 05_lenet, 05_sweep, 05_sensitivity and 05_lottery beside it."""

from pathlib import Path

GPU = Path(".gpu")
CHAIN = "# ## Distil, prune, quantize: a modern chain"


def lines(chapter: str) -> list[str]:
    return (GPU / f"{chapter}.py").read_text().split("\n")


def upto(src: list[str], heading: str) -> list[str]:
    return src[: src.index(heading)]


ch7 = lines("07_pipeline")
start = ch7.index("# ## Deep Compression on LeNet-300-100 and LeNet-5")
RUNS = {
    "rec01": upto(lines("01_why_compress"), "# ## Three families of compression"),
    "rec02": upto(lines("02_soft_targets"), "# ## What can go wrong"),
    "rec03": upto(lines("03_knowledge_distillation"), "# ## What can go wrong"),
    "rec04": upto(lines("04_feature_distillation"), "# ## Against the literature"),
    "rec05": upto(lines("05_pruning"), "# ## Against the literature"),
    "rec06": upto(lines("06_quantization"), "# ## Against the literature"),
    "rec07dc": upto(ch7, CHAIN),
    "rec07ch": upto(ch7[:start] + ch7[ch7.index(CHAIN):], "# ## Against the literature"),
    "rec08": upto(lines("08_claims"), "# ## Summary"),
    "rec09": upto(lines("09_language_model"), "# ## What can go wrong"),
}
for name, src in RUNS.items():
    (GPU / f"{name}.py").write_text("\n".join(src) + "\n")
    print(f".gpu/{name}.py: {len(src)} lines")
