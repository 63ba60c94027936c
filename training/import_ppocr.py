"""Build a TrOCR whose encoder is PP-OCRv6 small's recognition network, initialised from its ONNX weights.

    python -m training.import_ppocr --out runs/ppocr-init --decoder-from models/recognizer [--max-length 128]

The ONNX (`PP-OCRv6_rec_small.onnx`, PaddleOCR by Baidu, Apache-2.0) is read from the installed
`rapidocr` wheel unless `--onnx` names one. Its weights fill `ppocr_encoder.PPOCREncoderModel`
(batch norms already folded into the backbone's conv biases by the export; the neck keeps its
own); the encoder's CTC head takes, for each of our characters, the row of PP-OCR's 18710-way
classifier for the same symbol. The decoder is the shipped compact TrOCR decoder's architecture
with room for `--max-length` tokens; with `--decoder-from` it starts from that checkpoint's
weights wherever the shapes allow, its cross-attention keys/values (which now read 120-dim
encoder states) start fresh. The output directory is a plain VisionEncoderDecoderModel checkpoint
plus ATTRIBUTION.md and the wheel's licence texts under licenses/.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import VisionEncoderDecoderModel

from services.recognizer import compact_trocr, ppocr_encoder

ONNX_NAME = "PP-OCRv6_rec_small.onnx"
LICENSE_FILES = ("LICENSE", "MODEL_LICENSES.md")


def default_onnx() -> Path:
    """The ONNX inside the installed rapidocr package (located, not imported: that would pull in OpenCV)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("rapidocr is not installed: `pip install rapidocr` (the [peers] extra) or pass --onnx")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / ONNX_NAME


def license_texts(onnx_path: Path) -> dict[str, str]:
    """The wheel's LICENSE and MODEL_LICENSES.md: from the installed distribution, else beside the ONNX."""
    found: dict[str, str] = {}
    try:
        for file in importlib.metadata.distribution("rapidocr").files or []:
            if file.name in LICENSE_FILES:
                found[file.name] = file.read_text()
    except importlib.metadata.PackageNotFoundError:
        site = onnx_path.resolve().parent.parent.parent  # site-packages/rapidocr/models/x.onnx
        for folder in sorted(site.glob("rapidocr-*.dist-info/licenses")):
            for name in LICENSE_FILES:
                if (folder / name).exists():
                    found[name] = (folder / name).read_text()
    missing = [name for name in LICENSE_FILES if name not in found]
    if missing:
        sys.exit(f"rapidocr's {', '.join(missing)} not found: install the rapidocr wheel next to the ONNX")
    return found


class OnnxGraph:
    """Just enough of the exported graph to find each layer's weights by the structure around them."""

    def __init__(self, path: Path):
        model = onnx.load(str(path))
        self.graph = model.graph
        self.metadata = {prop.key: prop.value for prop in model.metadata_props}
        self.inits = {tensor.name: numpy_helper.to_array(tensor) for tensor in self.graph.initializer}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def next_ops(self, tensor: str) -> list:
        """The nodes reading `tensor`, looking through Identity nodes."""
        found = []
        for node in self.consumers.get(tensor, []):
            found.extend(self.next_ops(node.output[0]) if node.op_type == "Identity" else [node])
        return found

    def reaches(self, tensor: str, node, steps: int) -> bool:
        """Whether `node` reads `tensor` or something computed from it within `steps` nodes."""
        after = self.next_ops(tensor)
        return any(n is node for n in after) or (
            steps > 1 and any(self.reaches(out, node, steps - 1) for n in after for out in n.output)
        )

    def only_next(self, tensor: str, op_type: str):
        nodes = self.next_ops(tensor)
        if len(nodes) != 1 or nodes[0].op_type != op_type:
            raise ValueError(f"expected one {op_type} after {tensor}, found {[n.op_type for n in nodes]}")
        return nodes[0]

    def constant_input(self, node) -> np.ndarray:
        values = [self.inits[name] for name in node.input if name in self.inits]
        if len(values) != 1:
            raise ValueError(f"{node.op_type} {node.name}: expected one constant input")
        return values[0]

    @staticmethod
    def attributes(node) -> dict:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def convs(self) -> list[dict]:
        """Every Conv in graph order: weight, attributes and what follows (a bias Add or a BatchNormalization)."""
        found = []
        for node in self.graph.node:
            if node.op_type != "Conv":
                continue
            conv = {"node": node, "weight": self.inits[node.input[1]], **self.attributes(node)}
            after = self.next_ops(node.output[0])
            if len(after) == 1 and after[0].op_type == "Add":
                conv["bias"] = self.constant_input(after[0]).reshape(-1)
            elif len(after) == 1 and after[0].op_type == "BatchNormalization":
                bn = after[0]
                conv["bn"] = [self.inits[name] for name in bn.input[1:]] + [self.attributes(bn)["epsilon"]]
                conv["bn_out"] = bn.output[0]
            found.append(conv)
        return found

    def linears(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every MatMul by a constant, followed by a bias Add: (weight (in, out), bias)."""
        found = []
        for node in self.graph.node:
            if node.op_type == "MatMul" and node.input[1] in self.inits:
                bias = self.constant_input(self.only_next(node.output[0], "Add"))
                found.append((self.inits[node.input[1]], bias))
        return found

    def layer_norms(self) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """The decomposed LayerNorms (x - mean) / sqrt(var + eps) * gamma + beta: (gamma, beta, eps)."""
        found = []
        for node in self.graph.node:
            if node.op_type != "Sqrt":
                continue
            eps_add = next(n for n in self.graph.node if node.input[0] in n.output)
            eps = float(self.constant_input(eps_add))
            scale = self.only_next(self.only_next(node.output[0], "Div").output[0], "Mul")
            shift = self.only_next(scale.output[0], "Add")
            found.append((self.constant_input(scale), self.constant_input(shift), eps))
        return found

    def attention_heads(self) -> list[int]:
        """Heads of each attention, from the qkv Reshape's target shape [0, -1, 3, heads, head_dim]."""
        shapes = [
            self.inits[n.input[1]] for n in self.graph.node if n.op_type == "Reshape" and n.input[1] in self.inits
        ]
        return [int(shape[3]) for shape in shapes if len(shape) == 5 and shape[2] == 3]


def _set(params: dict[str, torch.Tensor], name: str, value: np.ndarray, filled: set[str]) -> None:
    value = torch.tensor(np.asarray(value, dtype=np.float32))
    if tuple(params[name].shape) != tuple(value.shape):
        raise ValueError(f"{name}: ONNX {tuple(value.shape)} vs model {tuple(params[name].shape)}")
    with torch.no_grad():
        params[name].copy_(value)
    filled.add(name)


def _conv_matches(conv: dict, module: torch.nn.Conv2d) -> bool:
    return (
        tuple(conv["weight"].shape) == tuple(module.weight.shape)
        and tuple(conv.get("strides", [1, 1])) == module.stride
        and conv.get("group", 1) == module.groups
    )


def load_encoder_weights(encoder: ppocr_encoder.PPOCREncoderModel, graph: OnnxGraph) -> tuple[np.ndarray, np.ndarray]:
    """Fill every encoder parameter and buffer except the CTC head; returns PP-OCR's classifier (W (in, out), b)."""
    params = dict(encoder.named_parameters()) | dict(encoder.named_buffers())
    filled: set[str] = set()

    def put_conv(conv: dict, prefix: str) -> None:
        _set(params, f"{prefix}.weight", conv["weight"], filled)
        if "bias" in conv:
            _set(params, f"{prefix}.bias", conv["bias"], filled)

    def put_conv_bn(conv: dict, prefix: str) -> None:  # a ConvBNSwish: 0 = conv, 1 = batch norm
        put_conv(conv, f"{prefix}.0")
        gamma, beta, mean, var, eps = conv["bn"]
        bn = encoder.get_submodule(f"{prefix}.1")
        if not np.isclose(bn.eps, eps):
            raise ValueError(f"{prefix}: batch norm eps {eps} in the ONNX, {bn.eps} in the config")
        for field, value in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
            _set(params, f"{prefix}.1.{field}", value, filled)
        params[f"{prefix}.1.num_batches_tracked"].zero_()
        filled.add(f"{prefix}.1.num_batches_tracked")

    convs = graph.convs()
    order = {id(node): index for index, node in enumerate(graph.graph.node)}
    pool = order[id(next(n for n in graph.graph.node if n.op_type == "AveragePool"))]
    backbone = [conv for conv in convs if order[id(conv["node"])] < pool]
    neck = [conv for conv in convs if order[id(conv["node"])] > pool]

    # backbone: a single chain, so graph order is forward order; each conv must match its module's shape
    modules = [
        (n, m) for n, m in encoder.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith("neck")
    ]
    if len(modules) != len(backbone):
        raise ValueError(f"backbone: {len(backbone)} convs in the ONNX, {len(modules)} in the model")
    for conv, (name, module) in zip(backbone, modules, strict=True):
        if not _conv_matches(conv, module) or "bias" not in conv:
            raise ValueError(f"{name}: ONNX conv {conv['node'].input[1]} does not match {module}")
        put_conv(conv, name)

    # neck: the (1, k) depthwise conv is `local`; the 1x1 conv feeding it is `conv_in`; the other is `shortcut`
    local = next(conv for conv in neck if conv["weight"].shape[1] == 1)
    conv_in = next(conv for conv in neck if conv is not local and graph.reaches(conv["bn_out"], local["node"], 3))
    shortcut = next(conv for conv in neck if conv is not local and conv is not conv_in)
    for conv, prefix in ((shortcut, "neck.shortcut"), (conv_in, "neck.conv_in"), (local, "neck.local")):
        if not _conv_matches(conv, encoder.get_submodule(f"{prefix}.0")):
            raise ValueError(f"{prefix}: ONNX conv {conv['node'].input[1]} does not match")
        put_conv_bn(conv, prefix)

    # transformer: heads and layer norms in graph order (norm1, norm2 per layer, then the final norm)
    heads = graph.attention_heads()
    if heads != [encoder.config.num_attention_heads] * encoder.config.num_hidden_layers:
        raise ValueError(f"attention heads in the ONNX: {heads}")
    norms = [f"neck.layers.{i}.norm{j}" for i in range(encoder.config.num_hidden_layers) for j in (1, 2)]
    norms.append("neck.norm")
    found_norms = graph.layer_norms()
    if len(found_norms) != len(norms):
        raise ValueError(f"{len(found_norms)} layer norms in the ONNX, {len(norms)} in the model")
    for (gamma, beta, eps), name in zip(found_norms, norms, strict=True):
        if not np.isclose(encoder.get_submodule(name).eps, eps):
            raise ValueError(f"{name}: eps {eps} in the ONNX")
        _set(params, f"{name}.weight", gamma, filled)
        _set(params, f"{name}.bias", beta, filled)

    # linears in graph order: qkv, proj, fc1, fc2 per layer, then the CTC classifier; ONNX stores (in, out)
    linears = graph.linears()
    names = [
        f"neck.layers.{i}.{n}"
        for i in range(encoder.config.num_hidden_layers)
        for n in ("attn.qkv", "attn.proj", "fc1", "fc2")
    ]
    if len(linears) != len(names) + 1:
        raise ValueError(f"{len(linears)} linears in the ONNX, expected {len(names) + 1}")
    for (weight, bias), name in zip(linears, names, strict=False):
        _set(params, f"{name}.weight", weight.T, filled)
        _set(params, f"{name}.bias", bias, filled)

    unfilled = sorted(name for name in params if name not in filled and not name.startswith("ctc_head."))
    if unfilled:
        raise ValueError(f"not filled from the ONNX: {unfilled}")
    return linears[-1]


def their_classes(graph: OnnxGraph, num_classes: int) -> dict[str, int]:
    """PP-OCR's class of each symbol: 0 is the CTC blank, the metadata's `character` lines are 1.., and
    a space is appended last when the classifier has room for it (PaddleOCR's use_space_char)."""
    symbols = graph.metadata["character"].split("\n")
    classes = {symbol: index + 1 for index, symbol in enumerate(symbols)}
    if num_classes == len(symbols) + 2:
        classes.setdefault(" ", len(symbols) + 1)
    elif num_classes != len(symbols) + 1:
        raise ValueError(f"{num_classes} classes for {len(symbols)} symbols")
    return classes


def init_ctc_head(encoder: ppocr_encoder.PPOCREncoderModel, weight: np.ndarray, bias: np.ndarray, graph: OnnxGraph):
    """Row 0 (blank) and each of our characters' rows from PP-OCR's classifier; absent characters keep their init."""
    classes = their_classes(graph, weight.shape[1])
    ours = ["<blank>", *compact_trocr.CHARACTERS]
    if encoder.config.ctc_vocab_size != len(ours):
        raise ValueError(f"ctc_vocab_size {encoder.config.ctc_vocab_size} != {len(ours)}")
    missing = []
    with torch.no_grad():
        for row, char in enumerate(ours):
            column = 0 if row == 0 else classes.get(char)
            if column is None:
                missing.append(char)
                continue
            encoder.ctc_head.weight[row] = torch.from_numpy(weight[:, column].copy())
            encoder.ctc_head.bias[row] = float(bias[column])
    return missing


DECODER_DEFAULTS = {  # compact_trocr.build_model's decoder, what models/recognizer ships
    "d_model": 256,
    "decoder_layers": 3,
    "decoder_attention_heads": 4,
    "decoder_ffn_dim": 1024,
    "use_learned_position_embeddings": True,
    "layernorm_embedding": True,
    "dropout": 0.1,
    "activation_function": "gelu",
}


def build(onnx_path: Path, decoder_from: Path | None, max_length: int):
    graph = OnnxGraph(onnx_path)
    encoder = ppocr_encoder.PPOCREncoderModel(ppocr_encoder.PPOCREncoderConfig())
    tokenizer = compact_trocr.build_char_tokenizer()
    source = None
    decoder_args = dict(DECODER_DEFAULTS)
    if decoder_from is not None:
        source = VisionEncoderDecoderModel.from_pretrained(decoder_from, local_files_only=True).decoder
        shipped = source.config
        decoder_args.update({key: getattr(shipped, key) for key in DECODER_DEFAULTS})
        if shipped.vocab_size != len(tokenizer):
            raise ValueError(f"{decoder_from}: decoder vocabulary {shipped.vocab_size} != tokenizer {len(tokenizer)}")
    decoder_config = compact_trocr.char_decoder_config(
        tokenizer,
        max_position_embeddings=max_length + 8,
        cross_attention_hidden_size=encoder.config.hidden_size,  # keys/values read the 120-dim states directly
        **decoder_args,
    )
    model = compact_trocr.assemble(encoder, decoder_config, tokenizer)

    # filled after the model is put together, so that no weight initialisation can overwrite them
    classifier_weight, classifier_bias = load_encoder_weights(model.encoder, graph)
    missing = init_ctc_head(model.encoder, classifier_weight, classifier_bias, graph)

    fresh = []
    if source is not None:
        target = model.decoder.state_dict()
        copied = {}
        for name, value in source.state_dict().items():
            if name not in target:
                continue
            if target[name].shape == value.shape:
                copied[name] = value
            elif re.search(r"embed_positions\.weight$", name) and target[name].shape[1:] == value.shape[1:]:
                rows = min(value.shape[0], target[name].shape[0])
                copied[name] = torch.cat([value[:rows], target[name][rows:]])  # the first rows that exist
                fresh.append(f"{name}[{rows}:]")
        fresh.extend(name for name in target if name not in copied)
        model.decoder.load_state_dict(copied, strict=False)
    return model, tokenizer, missing, fresh


def write_attribution(out: Path, onnx_path: Path) -> None:
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (out / "licenses").mkdir(parents=True, exist_ok=True)
    for name, text in license_texts(onnx_path).items():
        (out / "licenses" / f"rapidocr-{name}").write_text(text)
    characters = len(compact_trocr.CHARACTERS)
    (out / "ATTRIBUTION.md").write_text(
        "# Attribution\n\n"
        "The encoder of this model (`PPOCREncoderModel`, services/recognizer/ppocr_encoder.py) was initialised\n"
        "from the weights of **PP-OCRv6_rec_small** (PP-OCRv6 small text recognition) by the PaddleOCR project\n"
        "(Baidu and/or the applicable PaddleOCR rights holders), licensed under the Apache License, Version 2.0.\n"
        f"The weights were read from `{ONNX_NAME}` (SHA-256 `{digest}`)\n"
        "as distributed in the rapidocr 3.10 wheel (RapidOCR Authors, Apache-2.0).\n\n"
        "Changes: the ONNX weights were converted to a PyTorch re-implementation of the network; the\n"
        f"18710-class CTC classifier was cut to this project's characters (blank + {characters}, each row\n"
        "copied from PaddleOCR's row for the same symbol); a TrOCR decoder was attached; the model may\n"
        "since have been fine-tuned. The licence texts shipped with the wheel are in `licenses/`\n"
        "(`rapidocr-LICENSE`: the Apache License 2.0; `rapidocr-MODEL_LICENSES.md`: RapidOCR's model\n"
        "licence and attribution notice).\n\n"
        "Upstream: https://github.com/PaddlePaddle/PaddleOCR,\n"
        "https://huggingface.co/PaddlePaddle/PP-OCRv6_small_rec_onnx\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--onnx", type=Path, default=None, help=f"default: {ONNX_NAME} in the installed rapidocr")
    parser.add_argument("--decoder-from", type=Path, default=None, help="a checkpoint whose decoder weights to copy")
    parser.add_argument("--max-length", type=int, default=128, help="longest label in tokens, end token included")
    args = parser.parse_args(argv)
    onnx_path = args.onnx or default_onnx()
    model, tokenizer, missing, fresh = build(onnx_path, args.decoder_from, args.max_length)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    write_attribution(args.out, onnx_path)
    print(f"encoder from {onnx_path}; CTC rows PP-OCR lacks: {missing or 'none'}")
    if args.decoder_from is not None:
        print(f"decoder from {args.decoder_from}; fresh: {', '.join(fresh) or 'none'}")
    print(f"saved {sum(p.numel() for p in model.parameters()):,} parameters to {args.out}")


if __name__ == "__main__":
    main()
