"""Dimensions as products (onnxgrow/widening/rules/dims.py): merged dynamic axes match when
their products do, whether written as lists (``[batch, 6]``), products (``6*batch``) or a mix."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxgrow.widening.rules.dims import Dim, Product, product, static_product

symbols = st.sampled_from(["batch", "seq", "s0", "N"])
dims = st.lists(st.one_of(st.integers(1, 12), symbols), max_size=5)


@pytest.mark.parametrize(("dims", "expected"), [
    ([2, 3, 4], Product(24)),
    ([], Product(1)),
    (["batch", 6], Product(6, ("batch",))),
    (["6*batch"], Product(6, ("batch",))),
    (["seq*batch*2", "batch"], Product(2, ("batch", "batch", "seq"))),
    (["2*s0 + 1"], Product(1, ("2*s0 + 1",))),  # a sum is one opaque factor
    (["s0-1", 4], Product(4, ("s0-1",))),
    (["Min(6, seq)*batch"], Product(1, ("Min(6, seq)", "batch"))),  # a call is one factor
    (["2*Min(6, seq) + Max(1, s0)"], Product(1, ("2*Min(6, seq) + Max(1, s0)",))),  # a sum of calls too
    (["a.b*2"], Product(1, ("a.b*2",))),  # not a product of names and numbers
])
def test_product_parses_names_numbers_and_opaque_factors(dims: list[Dim], expected: Product) -> None:
    assert product(dims) == expected


@settings(max_examples=100, deadline=None)
@given(left=dims, right=dims)
def test_a_list_and_its_written_product_agree(left: list[Dim], right: list[Dim]) -> None:
    whole = product(left + right)
    assert whole == product(left) * product(right) == product(right) * product(left)
    if left:
        assert product(["*".join(str(d) for d in left)]) == product(left)
    assert product(left).divides(whole) and whole / product(left) == product(right)


@settings(max_examples=100, deadline=None)
@given(dims=dims)
def test_as_dim_writes_a_product_that_parses_back(dims: list[Dim]) -> None:
    p = product(dims)
    written = p.as_dim()
    assert isinstance(written, int) == (not p.symbols)
    assert product([written]) == p


@pytest.mark.parametrize(("divisor", "dividend", "divides"), [
    (["batch"], ["6*batch"], True),
    (["6*batch"], ["batch"], False),
    ([4], [12], True),
    ([5], [12], False),
    (["batch", "batch"], ["batch", 3], False),  # the power matters
    (["batch", 2], ["2*seq"], False),
    ([0], [0], False),  # nothing divides by zero
])
def test_divides(divisor: list[Dim], dividend: list[Dim], divides: bool) -> None:
    assert product(divisor).divides(product(dividend)) is divides


def test_division_refuses_a_non_divisor() -> None:
    assert product(["6*batch*seq"]) / product([2, "batch"]) == Product(3, ("seq",))
    with pytest.raises(AssertionError):
        product(["batch"]) / product(["seq"])


@pytest.mark.parametrize(("p", "dim"), [
    (Product(6), 6), (Product(6, ("batch",)), "6*batch"), (Product(1, ("batch", "seq")), "batch*seq"),
])
def test_as_dim(p: Product, dim: Dim) -> None:
    assert p.as_dim() == dim


@settings(max_examples=50, deadline=None)
@given(dims=dims)
def test_static_product_only_of_integers(dims: list[Dim]) -> None:
    ints = [d for d in dims if isinstance(d, int)]
    assert static_product(dims) == (math.prod(ints) if len(ints) == len(dims) else None)
