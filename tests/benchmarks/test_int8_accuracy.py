"""The INT8 benchmark's agreement measure: identical persons agree fully, a moved, lost or extra
person is counted as such, and recipes parse into `[quantize]` overrides."""
from __future__ import annotations

import numpy as np
import pytest

from posestream.benchmarks.int8_accuracy import (agreement, agreement_metric, exact_int8, float_compute_ops,
                                                 format_result, jittered_int8, parse_recipe)
from posestream.stream.core.errors import InputError


def _persons(boxes: list[list[float]], scores: list[float], shift: float = 0.0) -> tuple:
    keypoints = np.zeros((len(boxes), 17, 3), np.float32)
    for i, (x, y, w, h) in enumerate(boxes):
        keypoints[i, :, 0] = np.linspace(x, x + w, 17) + shift
        keypoints[i, :, 1] = np.linspace(y, y + h, 17)
        keypoints[i, :, 2] = 0.9
    return np.asarray(boxes, np.float32), np.asarray(scores, np.float32), keypoints


def test_agreement_counts_moved_missed_and_extra_persons() -> None:
    truth = [_persons([[10, 10, 50, 150], [200, 20, 40, 120]], [0.9, 0.6])]
    same = agreement(truth, truth)
    assert same == {"persons": 2, "mean_oks": 1.0, "p10_oks": 1.0, "missed": 0, "extra": 0, "score_diff": 0.0}
    moved = agreement(truth, [_persons([[10, 10, 50, 150], [200, 20, 40, 120]], [0.8, 0.6], shift=4.0)])
    assert 0.5 < moved["mean_oks"] < 0.99 and moved["missed"] == 0 and moved["score_diff"] == pytest.approx(0.05)
    lost = agreement(truth, [_persons([[10, 10, 50, 150], [400, 300, 40, 120]], [0.9, 0.5])])
    assert lost["missed"] == 1 and lost["extra"] == 1 and lost["mean_oks"] == pytest.approx(0.5)


def test_recipes_parse_into_quantize_overrides() -> None:
    assert parse_recipe("v2=attention_in_float=false,mosaics=0,detector.input_size=320") == (
        "v2", ["quantize.attention_in_float=false", "quantize.mosaics=0", "detector.input_size=320"])
    with pytest.raises(InputError, match="NAME=KEY=VALUE"):
        parse_recipe("no-settings")


def test_agreement_metric_is_one_for_fp32_itself_and_falls_with_moves_and_score_drift() -> None:
    truth = [_persons([[10, 10, 50, 150]], [0.9])]
    assert agreement_metric(agreement(truth, truth)) == 1.0
    drifted = agreement(truth, [_persons([[10, 10, 50, 150]], [0.7], shift=2.0)])
    assert agreement_metric(drifted) == pytest.approx(drifted["mean_oks"] - 0.2)
    nobody = [_persons([], [])]
    assert agreement_metric(agreement(nobody, nobody)) == 1.0  # nothing to compare: no loss


def test_float_compute_ops_names_the_convolutions_without_a_quantized_input() -> None:
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    weights = ops.constant(np.ones((4, 3, 1, 1), np.float32))
    low, high = ops.constant(np.float32(0)), ops.constant(np.float32(1))
    quantized = ops.fake_quantize(x, low, high, low, high, 256)
    int8_conv = ops.convolution(quantized, weights, [1, 1], [0, 0], [0, 0], [1, 1])
    int8_conv.set_friendly_name("int8_conv")
    float_conv = ops.convolution(x, weights, [1, 1], [0, 0], [0, 0], [1, 1])
    float_conv.set_friendly_name("float_conv")
    model = ov.Model([int8_conv, float_conv], [x])
    assert float_compute_ops(model) == {"float_conv"}


def test_exact_int8_computes_the_quantized_values_in_float() -> None:
    """A quantized 1x1 conv whose u8 x s8 pairs overflow 16 bits (activations at the top of their
    range, weights at +-127): written out, the model gives numpy's exact sum of the quantized values,
    whatever INT8 arithmetic this CPU has, and no FakeQuantize is left."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter([1, 4, 3, 3], np.float32, name="x")
    low, high = ops.constant(np.float32(0)), ops.constant(np.float32(2.55))
    act = ops.fake_quantize(x, low, high, low, high, 256)
    w = rng.uniform(-1, 1, (2, 4, 1, 1)).astype(np.float32)
    w[:, :, 0, 0] = np.sign(w[:, :, 0, 0])  # every weight at the edge of its range: s8 -127 / 127
    bound = ops.constant(np.ones((2, 1, 1, 1), np.float32))
    weights = ops.fake_quantize(ops.constant(w), ops.negative(bound), bound, ops.negative(bound), bound, 255)
    conv = ops.convolution(act, weights, [1, 1], [0, 0], [0, 0], [1, 1])
    model = ov.Model([conv], [x])
    assert exact_int8(model) == 2
    assert not any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    data = rng.uniform(2.3, 3.0, (1, 4, 3, 3)).astype(np.float32)
    out = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(data)[0]
    quantized = np.round(np.clip(data, 0, 2.55) / 2.55 * 255) / 255 * 2.55
    expected = np.einsum("oi,nihw->nohw", np.round(w[:, :, 0, 0] * 127) / 127, quantized)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_the_table_shows_a_model_that_finds_nobody() -> None:
    """A broken recipe (every FP32 person missed: no score difference to average) is a row of the
    table, not a traceback that loses the other rows."""
    truth = [_persons([[10, 10, 50, 150]], [0.9])]
    lost = agreement(truth, [_persons([], [])])
    assert lost["missed"] == 1 and lost["score_diff"] is None
    result = {"validation": {"images": 1, "persons": 1}, "load_avg": [0.5],
              "recipes": {"default": {"agreement": agreement(truth, truth), "cpu_ms": 20.0, "build_s": 60},
                          "broken": {"agreement": lost, "cpu_ms": 21.0, "build_s": 61}}}
    result["recipes"]["default"]["exact"] = lost
    lines = format_result(result)
    broken = next(line for line in lines if line.startswith("broken"))
    assert broken.split()[1:6] == ["0.0000", "0.0000", "1", "0", "-"]
    exact = next(line for line in lines if line.startswith("default, exact INT8"))
    assert exact.split()[3:] == ["0.0000", "0.0000", "1", "0", "-", "-", "-"]  # no CPU time or build of its own


def _quantized_conv_with_bias(bias: np.ndarray):
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 2, 4, 4], np.float32, name="x")
    act = ops.fake_quantize(x, ops.constant(np.float32(0)), ops.constant(np.float32(2.5)),
                            ops.constant(np.float32(0)), ops.constant(np.float32(2.5)), 256)
    weights = ops.constant(np.arange(6, dtype=np.float32).reshape(3, 2, 1, 1) - 2.5)
    conv = ops.convolution(act, weights, [1, 1], [0, 0], [0, 0], [1, 1])
    return ov.Model([ops.add(conv, ops.constant(bias.reshape(1, 3, 1, 1)))], [x])


def _constants(model) -> dict[str, np.ndarray]:
    """Each FakeQuantize's four range inputs and each Add's constant, by the consuming op's kind."""
    found: dict[str, list] = {"range": [], "bias": [], "weights": []}
    for op in model.get_ordered_ops():
        for i in range(op.get_input_size()):
            source = op.input_value(i).get_node()
            if source.get_type_name() != "Constant":
                continue
            kind = {"FakeQuantize": "range", "Add": "bias", "Convolution": "weights"}.get(op.get_type_name())
            if kind:
                found[kind].append(source.get_data().copy())
    return found


def test_jitter_moves_ranges_and_biases_by_float_last_digits_and_leaves_weights() -> None:
    """Build noise as another CPU makes it: every quantizer range (input and output alike) and every
    convolution bias moves by at most the relative size, the weights and zero bounds stay, and a
    seed gives the same copy twice."""
    bias = np.array([0.5, -1.0, 2.0], np.float32)
    before = _constants(_quantized_conv_with_bias(bias))
    model = _quantized_conv_with_bias(bias)
    assert jittered_int8(model, 1e-3, seed=7) == 3  # the quantizer's two bounds, the bias
    after = _constants(model)
    low, high, out_low, out_high = after["range"]
    assert low == 0 and out_low == 0 and high == out_high and high != 2.5 and abs(high / 2.5 - 1) <= 1e-3
    assert not np.array_equal(after["bias"][0], bias)
    np.testing.assert_allclose(after["bias"][0].ravel(), bias, rtol=1e-3)
    np.testing.assert_array_equal(after["weights"][0], before["weights"][0])
    again = _quantized_conv_with_bias(bias)
    jittered_int8(again, 1e-3, seed=7)
    assert all(np.array_equal(a, b) for kind in after for a, b in zip(after[kind], _constants(again)[kind]))


def test_the_jitter_table_gives_each_sets_ap_range_next_to_the_model_itself() -> None:
    truth = [_persons([[10, 10, 50, 150]], [0.9])]
    copies = [{"seed": seed, "agreement": agreement(truth, truth), "eval": {"COCO": {"AP": ap}}}
              for seed, ap in ((1, 0.664), (2, 0.682), (3, 0.675))]
    result = {"validation": {"images": 1, "persons": 1}, "load_avg": [0.5],
              "recipes": {"default": {"agreement": agreement(truth, truth), "cpu_ms": 20.0, "build_s": 0}},
              "eval": {"COCO": {"FP32": {"AP": 0.687, "AP50": 1, "AP75": 1, "AR": 1, "mean_oks": None},
                                "default": {"AP": 0.675, "AP50": 1, "AP75": 1, "AR": 1, "mean_oks": None}}},
              "jitter": {"size": 1e-6, "copies": {"default": copies}}}
    lines = format_result(result)
    assert "COCO: AP 0.664 - 0.682 (median 0.675) over the copies; 'default' itself 0.675" in lines
    assert "mean OKS: 1.0000 - 1.0000 (median 1.0000) over the copies; 'default' itself 1.0000" in lines
    assert next(line for line in lines if line.startswith("2 ")).split()[-1] == "0.682"
