"""Cases for Resize: nearest, linear and cubic modes, the coordinate transformations,
upsampling and downsampling, integer and non-integer factors, by scales and by sizes.
The factors avoid exact rounding ties of nearest mode, where float32 (onnxruntime)
and float64 (the reference) may pick different pixels, and align_corners with a
fractional output width, where the reference uses the fractional width and
onnxruntime the integer one (camcore follows onnxruntime)."""

from __future__ import annotations

from tests.graph.rule_cases import RuleCase

EMPTY = "r = Constant<value = float[0] {}>()"


def resize(
    attrs: str,
    opset: int,
    ins: str,
    outs: str,
    scales: str | None = None,
    sizes: str | None = None,
    *,
    tag: str = "",
    axes: str = "",
) -> RuleCase:
    """``y = Resize<attrs>(x, roi, scales | sizes)`` on a tiny NCHW input."""
    if scales is not None:
        n = scales.count(",") + 1
        consts = f"{EMPTY} s = Constant<value = float[{n}] {{{scales}}}>()"
        args = "x, r, s"
    else:
        n = sizes.count(",") + 1  # type: ignore[union-attr]
        s_arg = "s" if opset < 13 else ""
        consts = EMPTY + (" s = Constant<value = float[0] {}>()" if opset < 13 else "")
        consts += f" z = Constant<value = int64[{n}] {{{sizes}}}>()"
        args = f"x, r, {s_arg}, z"
    all_attrs = ", ".join(a for a in (attrs, axes) if a)
    text = f"""<ir_version: 8, opset_import: ["" : {opset}]>
g (float[{ins}] x) => (float[{outs}] y) {{
  {consts}
  y = Resize<{all_attrs}>({args}) }}"""
    how = f"scales{scales}" if scales is not None else f"sizes{sizes}"
    case_id = f"Resize-{attrs}-{how}{tag}-op{opset}".replace('"', "").replace(" ", "")
    return RuleCase(case_id, "Resize", text)


def mode(m: str, ctm: str, extra: str = "") -> str:
    return ", ".join(a for a in (f'mode = "{m}"', f'coordinate_transformation_mode = "{ctm}"', extra) if a)


CASES = [
    # nearest x the four common coordinate transformations, up and down
    resize(mode("nearest", "asymmetric", 'nearest_mode = "floor"'), 11, "1,1,3,4", "1,1,6,8", "1, 1, 2, 2"),
    resize(mode("nearest", "half_pixel"), 13, "1,1,3,4", "1,1,5,7", sizes="1, 1, 5, 7"),
    resize(
        mode("nearest", "pytorch_half_pixel", 'nearest_mode = "round_prefer_ceil"'),
        18,
        "1,1,5,6",
        "1,1,3,4",
        sizes="1, 1, 3, 4",
    ),
    resize(mode("nearest", "align_corners", 'nearest_mode = "ceil"'), 13, "1,1,3,4", "1,1,7,6", sizes="1, 1, 7, 6"),
    resize(
        mode("nearest", "asymmetric", 'nearest_mode = "round_prefer_floor"'), 11, "1,2,3,4", "1,2,4,6", "1, 1, 1.5, 1.6"
    ),
    resize(mode("nearest", "half_pixel", 'nearest_mode = "floor"'), 19, "1,1,6,5", "1,1,4,2", "1, 1, 0.7, 0.5"),
    # linear x the four coordinate transformations, up and down, non-integer factors
    resize(mode("linear", "half_pixel"), 11, "1,2,3,4", "1,2,6,8", "1, 1, 2, 2"),
    resize(mode("linear", "pytorch_half_pixel"), 13, "1,1,3,4", "1,1,5,7", sizes="1, 1, 5, 7"),
    resize(mode("linear", "align_corners"), 11, "1,1,4,3", "1,1,6,5", sizes="1, 1, 6, 5"),
    resize(mode("linear", "asymmetric"), 13, "1,1,4,5", "1,1,6,6", "1, 1, 1.5, 1.3"),
    resize(mode("linear", "half_pixel"), 18, "1,1,6,7", "1,1,4,3", sizes="1, 1, 4, 3"),
    resize(mode("linear", "align_corners"), 18, "1,1,5,6", "1,1,3,3", "0.6, 0.5", axes="axes = [2, 3]"),
    resize(mode("linear", "half_pixel_symmetric"), 19, "1,1,3,4", "1,1,5,9", "1, 1, 1.7, 2.3"),
    resize(mode("linear", "pytorch_half_pixel"), 21, "1,1,5,4", "1,1,1,6", sizes="1, 1, 1, 6"),
    # cubic
    resize(mode("cubic", "half_pixel"), 13, "1,1,4,4", "1,1,6,7", sizes="1, 1, 6, 7"),
    resize(
        mode("cubic", "align_corners", "exclude_outside = 1, cubic_coeff_a = -0.5"),
        11,
        "1,1,4,3",
        "1,1,7,5",
        sizes="1, 1, 7, 5",
    ),
    # a dynamic batch: sizes built at run time from Shape(X), as PyTorch exports them
    RuleCase(
        "Resize-linear-runtime-sizes-dynamic-batch-op13",
        "Resize",
        """<ir_version: 8, opset_import: ["" : 13]>
g (float[N,2,3,4] x) => (float[N,2,5,6] y) {
  shp = Shape(x) st = Constant<value = int64[1] {0}>() en = Constant<value = int64[1] {2}>()
  nc = Slice(shp, st, en) hw = Constant<value = int64[2] {5, 6}>() z = Concat<axis = 0>(nc, hw)
  y = Resize<mode = "linear">(x, , , z) }""",
        feed_shapes={"x": (2, 2, 3, 4)},
    ),
]
