"""Caffe import: an independent encoder (Google's protobuf runtime, message types of BVLC's
caffe.proto declared here field by field, nothing shared with ``verydeep.io.weights.protowire``) writes
.caffemodel files in the current and the legacy layer format; the reader must give back the
same weights and logits, check deploy prototxts, and reject malformed input with ValueError.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verydeep.cli import main
from verydeep.data.preprocess import Preprocess
from verydeep.io.checkpoint import load_model
from verydeep.io.weights.caffe import caffe_weights, parse_net
from verydeep.io.weights.convert import convert, load_weights
from verydeep.io.weights.layout import build_model, state_dict_from_named
from verydeep.io.weights.prototxt import check_against, parse
from verydeep.models.vgg import VGG

F = descriptor_pb2.FieldDescriptorProto
# string type -> (V1LayerParameter.LayerType name, number), from BVLC caffe.proto
V1_TYPES = {
    "Convolution": ("CONVOLUTION", 4),
    "InnerProduct": ("INNER_PRODUCT", 14),
    "LRN": ("LRN", 15),
    "Pooling": ("POOLING", 17),
    "ReLU": ("RELU", 18),
    "Dropout": ("DROPOUT", 6),
}


def _field(msg, name, number, kind, label=F.LABEL_OPTIONAL, type_name=None, packed=False):
    f = msg.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        f.type_name = type_name
    if packed:
        f.options.packed = True


def _messages() -> dict:
    fd = descriptor_pb2.FileDescriptorProto(name="caffe_test.proto", package="caffe", syntax="proto2")
    rep = F.LABEL_REPEATED
    shape = fd.message_type.add(name="BlobShape")
    _field(shape, "dim", 1, F.TYPE_INT64, rep, packed=True)
    blob = fd.message_type.add(name="BlobProto")
    _field(blob, "shape", 7, F.TYPE_MESSAGE, type_name=".caffe.BlobShape")
    _field(blob, "data", 5, F.TYPE_FLOAT, rep, packed=True)
    for i, name in enumerate(("num", "channels", "height", "width"), start=1):
        _field(blob, name, i, F.TYPE_INT32)
    layer = fd.message_type.add(name="LayerParameter")
    _field(layer, "name", 1, F.TYPE_STRING)
    _field(layer, "type", 2, F.TYPE_STRING)
    _field(layer, "bottom", 3, F.TYPE_STRING, rep)
    _field(layer, "top", 4, F.TYPE_STRING, rep)
    _field(layer, "blobs", 7, F.TYPE_MESSAGE, rep, ".caffe.BlobProto")
    v0 = fd.message_type.add(name="V0LayerParameter")
    _field(v0, "name", 1, F.TYPE_STRING)
    _field(v0, "type", 2, F.TYPE_STRING)
    _field(v0, "blobs", 50, F.TYPE_MESSAGE, rep, ".caffe.BlobProto")
    v1 = fd.message_type.add(name="V1LayerParameter")
    enum = v1.enum_type.add(name="LayerType")
    for name, number in [("NONE", 0), *V1_TYPES.values()]:
        enum.value.add(name=name, number=number)
    _field(v1, "bottom", 2, F.TYPE_STRING, rep)
    _field(v1, "top", 3, F.TYPE_STRING, rep)
    _field(v1, "name", 4, F.TYPE_STRING)
    _field(v1, "type", 5, F.TYPE_ENUM, type_name=".caffe.V1LayerParameter.LayerType")
    _field(v1, "blobs", 6, F.TYPE_MESSAGE, rep, ".caffe.BlobProto")
    _field(v1, "layer", 1, F.TYPE_MESSAGE, type_name=".caffe.V0LayerParameter")
    net = fd.message_type.add(name="NetParameter")
    _field(net, "name", 1, F.TYPE_STRING)
    _field(net, "layers", 2, F.TYPE_MESSAGE, rep, ".caffe.V1LayerParameter")
    _field(net, "input", 3, F.TYPE_STRING, rep)
    _field(net, "input_dim", 4, F.TYPE_INT32, rep)
    _field(net, "layer", 100, F.TYPE_MESSAGE, rep, ".caffe.LayerParameter")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    names = ("BlobProto", "LayerParameter", "V0LayerParameter", "V1LayerParameter", "NetParameter")
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{n}")) for n in names}


MSG = _messages()


def caffe_layers(net: VGG) -> list[tuple[str, str, list[np.ndarray]]]:
    """(name, type, blobs) in Caffe's order for our net, with the weightless layers too."""
    convs = net.conv_layers()
    out, block = [], 1
    it = iter(convs.items())
    for m in net.features:
        kind = type(m).__name__
        if kind == "Conv2d":
            name, conv = next(it)
            out.append((name, "Convolution", [conv.weight.detach().numpy(), conv.bias.detach().numpy()]))
        elif kind == "ReLU":
            out.append((f"relu{out[-1][0][4:]}", "ReLU", []))
        elif isinstance(m, torch.nn.LocalResponseNorm):  # verydeep's LRN subclasses it
            out.append(("norm1", "LRN", []))
        elif kind == "MaxPool2d":
            out.append((f"pool{block}", "Pooling", []))
            block += 1
    for j, i in enumerate((0, 3, 6)):
        lin = net.classifier[i]
        out.append((f"fc{6 + j}", "InnerProduct", [lin.weight.detach().numpy(), lin.bias.detach().numpy()]))
        if j < 2:
            out += [(f"relu{6 + j}", "ReLU", []), (f"drop{6 + j}", "Dropout", [])]
    return out


V0_TYPES = {"Convolution": "conv", "InnerProduct": "innerproduct", "LRN": "lrn", "Pooling": "pool"}


def encode(net: VGG, legacy: bool = False, v0: bool = False) -> bytes:
    """A binary NetParameter of ``net``: ``layer`` (shape blobs) or legacy ``layers`` (4-D);
    ``v0``: each legacy layer holds only a nested V0LayerParameter (Caffe before 2014)."""
    msg = MSG["NetParameter"](name="VGG_test")
    msg.input.append("data")
    msg.input_dim.extend([1, 3, net.crop_size, net.crop_size])
    legacy = legacy or v0
    for name, kind, blobs in caffe_layers(net):
        layer = msg.layers.add() if legacy else msg.layer.add()
        if v0:
            layer = layer.layer
            layer.type = V0_TYPES.get(kind, kind.lower())
        else:
            layer.type = V1_TYPES[kind][1] if legacy else kind
        layer.name = name
        for arr in blobs:
            blob = layer.blobs.add()
            blob.data.extend(arr.ravel().tolist())
            if legacy:  # Caffe 2014: always 4-D, FC weights (1, 1, out, in), biases (1, 1, 1, out)
                dims = (1,) * (4 - arr.ndim) + arr.shape
                blob.num, blob.channels, blob.height, blob.width = dims
            else:
                blob.shape.dim.extend(arr.shape)
    return msg.SerializeToString()


def deploy_prototxt(net: VGG, legacy: bool = False) -> str:
    """The deploy text of ``net`` (Caffe's VGG release style)."""
    lines = ['name: "VGG_test"', 'input: "data"']
    lines += [f"input_dim: {d}" for d in (1, 3, net.crop_size, net.crop_size)]
    key = "layers" if legacy else "layer"
    for name, kind, blobs in caffe_layers(net):
        kind_text = V1_TYPES[kind][0] if legacy else f'"{kind}"'
        body = f'name: "{name}" type: {kind_text}'
        if kind == "Convolution":
            k = blobs[0].shape[-1]
            body += f" convolution_param {{ num_output: {blobs[0].shape[0]} pad: {k // 2} kernel_size: {k} }}"
        elif kind == "InnerProduct":
            body += f" inner_product_param {{ num_output: {blobs[0].shape[0]} }}"
        elif kind == "Pooling":
            body += " pooling_param { pool: MAX kernel_size: 2 stride: 2 }"
        lines.append(f"{key} {{ {body} }}")
    return "\n".join(lines) + "\n"


# --- tests ---------------------------------------------------------------------------------
SMALL = {"num_classes": 5, "width_mult": 0.125, "fc_width": 32, "crop_size": 64}


def _net(arch: str, seed: int = 0) -> VGG:
    torch.manual_seed(seed)
    net = VGG(arch, **SMALL).eval()
    with torch.no_grad():  # non-zero biases, so a lost or misplaced bias shows
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net


def _images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(1)).to(
        torch.uint8
    )


@pytest.mark.parametrize(
    ("arch", "legacy", "v0"),
    [
        ("D", False, False),  # current `layer` format
        ("D", True, False),  # legacy `layers` format of the 2014 release
        ("D", True, True),  # V0 layers nested in V1
        ("C", True, False),  # 1x1 convs: told apart from D by kernel size
        ("E", False, False),
        ("A-LRN", True, False),  # told apart from A by the LRN layer
    ],
)
def test_round_trip_identical(tmp_path, arch, legacy, v0):
    net = _net(arch)
    src = tmp_path / "net.caffemodel"
    src.write_bytes(encode(net, legacy, v0))
    convert(src, tmp_path / "net.safetensors")
    back, meta = load_model(tmp_path / "net.safetensors")
    back.eval()
    assert back.arch == net.arch and meta.source == "caffe"
    for (k, a), (k2, b) in zip(net.state_dict().items(), back.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    # the Caffe default: weights untouched, BGR input, the release's mean pixel
    assert meta.prep == Preprocess.preset("caffe")
    x = meta.prep(_images())
    assert torch.equal(back(x), net(x))
    assert meta.classes == [f"class_{i}" for i in range(5)]


def test_rgb_conversion_same_predictions(tmp_path):
    """Reordering conv1_1 to RGB with RGB preprocessing must not change any logit."""
    net = _net("D", seed=3)
    src = tmp_path / "net.caffemodel"
    src.write_bytes(encode(net))
    bgr, meta_bgr = load_weights(src)
    rgb, meta_rgb = load_weights(src, rgb=True)
    assert meta_bgr.prep.bgr and not meta_rgb.prep.bgr
    assert meta_rgb.prep.mean == (123.68, 116.779, 103.939)  # Caffe's mean pixel, RGB order
    torch.testing.assert_close(rgb.features[0].weight, bgr.features[0].weight.flip(1), rtol=0, atol=0)
    img = _images()
    torch.testing.assert_close(rgb(meta_rgb.prep(img)), bgr(meta_bgr.prep(img)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="BGR"):
        load_weights(src, rgb=True, preprocess="caffe")
    with pytest.raises(ValueError, match="RGB"):
        load_weights(src, preprocess="paper")
    # `paper` on RGB-converted Caffe weights keeps their mean pixel (the paper's "training-set mean")
    assert load_weights(src, rgb=True, preprocess="paper")[1].prep == meta_rgb.prep


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "legacy-layers"])
def test_prototxt_checked(tmp_path, legacy):
    net = _net("D")
    src, proto = tmp_path / "net.caffemodel", tmp_path / "deploy.prototxt"
    src.write_bytes(encode(net, legacy))
    text = deploy_prototxt(net, legacy)
    proto.write_text(text)
    model, _ = load_weights(src, prototxt=proto)
    assert model.arch == "D"
    proto.write_text(text.replace("num_output: 5 ", "num_output: 1000 "))
    with pytest.raises(ValueError, match="fc8: num_output 1000, weights have 5"):
        load_weights(src, prototxt=proto)
    proto.write_text(text.replace('"conv3_3"', '"conv3_x"'))
    with pytest.raises(ValueError, match="disagree"):
        load_weights(src, prototxt=proto)
    proto.write_text(text.replace("input_dim: 64", "input_dim: 224"))
    with pytest.raises(ValueError, match="input 224x224"):
        load_weights(src, prototxt=proto)
    # exit code 2 and one line from the CLI
    assert main(["convert", str(src), str(tmp_path / "o.safetensors"), "--prototxt", str(proto)]) == 2


def test_cli_convert_rgb_classes(tmp_path, capsys):
    net = _net("E")
    src = tmp_path / "vgg19.caffemodel"
    src.write_bytes(encode(net, legacy=True))
    names = tmp_path / "classes.txt"
    names.write_text("".join(f"n{i}\n" for i in range(5)))
    out = tmp_path / "vgg19.safetensors"
    assert main(["convert", str(src), str(out), "--rgb", "--classes", str(names)]) == 0
    assert "VGG E from caffe" in capsys.readouterr().out
    _, meta = load_model(out)
    assert meta.classes == ["n0", "n1", "n2", "n3", "n4"] and not meta.prep.bgr


def _tiny_net() -> VGG:
    torch.manual_seed(5)
    return VGG("A", num_classes=2, width_mult=1 / 64, fc_width=2, crop_size=32)


FUZZ_BASE = encode(_tiny_net(), legacy=True)  # about 5 KB: every byte gets its chance


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def test_malformed_input_rejected(tmp_path):
    good = encode(_net("A"))
    for cut in (1, 7, len(good) // 2, len(good) - 3):
        with pytest.raises(ValueError):
            parse_net(good[:cut])
    # a field declaring 2**40 bytes in a tiny file: refused before any allocation
    with pytest.raises(ValueError, match="declares"):
        parse_net(b"\xa2\x06" + _varint(1 << 40) + b"xx")
    # a blob whose shape claims 10**12 values but carries 2
    blob = MSG["BlobProto"](data=[1.0, 2.0])
    blob.shape.dim.extend([10**6, 10**6])
    layer = MSG["LayerParameter"](name="fc8", type="InnerProduct")
    layer.blobs.append(blob)
    net = MSG["NetParameter"]()
    net.layer.append(layer)
    with pytest.raises(ValueError, match="does not match"):
        parse_net(net.SerializeToString())
    with pytest.raises(ValueError, match="varint"):
        parse_net(b"\x08" + b"\xff" * 11)
    with pytest.raises(ValueError, match="wire type"):
        parse_net(b"\x0b")  # field 1, a deprecated group
    with pytest.raises(ValueError, match="no layers"):
        parse_net(MSG["NetParameter"](name="empty").SerializeToString())
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match=r"bad\.caffemodel"):
        load_weights(bad)
    assert main(["convert", str(bad), str(tmp_path / "o.safetensors")]) == 2


def test_wrong_weights_rejected(tmp_path):
    net = _net("D")
    src = tmp_path / "net.caffemodel"
    msg = MSG["NetParameter"]()
    msg.ParseFromString(encode(net))
    del msg.layer[-1]  # fc8 gone (Dropout/ReLU are before it)
    src.write_bytes(msg.SerializeToString())
    with pytest.raises(ValueError, match="fc8"):
        load_weights(src)
    with pytest.raises(ValueError, match="conv layers"):
        src.write_bytes(encode(net))
        load_weights(src, arch="E")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_caffemodels_only_raise_value_error(data):
    """Truncated, bit-flipped or spliced files: a net or a ValueError, nothing else."""
    good = FUZZ_BASE
    cut = data.draw(st.integers(0, len(good)))
    blob = bytearray(good[:cut])
    for _ in range(data.draw(st.integers(0, 4))):
        if blob:
            i = data.draw(st.integers(0, len(blob) - 1))
            blob[i] = data.draw(st.integers(0, 255))
    blob += data.draw(st.binary(max_size=16))
    try:
        sd, letter = state_dict_from_named(caffe_weights(parse_net(bytes(blob))))
        build_model(sd, letter)
    except ValueError:
        pass


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet='layer{}: "name#\n12_-.x', max_size=200))
def test_fuzzed_prototxt_only_raises_value_error(text):
    try:
        net = parse(text)
        check_against(net, {})
    except ValueError:
        pass
