"""The conditioning object: rows, stacking, row replacement (caption dropout), device and dtype moves."""

import torch

from sora.models.conditioning import Conditioning


def cond(b=3, m=4, d=5, fill=None):
    text = torch.randn(b, m, d) if fill is None else torch.full((b, m, d), float(fill))
    mask = torch.ones(b, m, dtype=torch.bool)
    mask[0, 2:] = False
    return Conditioning(text, mask)


def test_rows_and_cat_keep_every_field_aligned():
    c = cond()
    two = c.rows(slice(1, 3))
    assert len(two) == 2 and two.text.shape == (2, 4, 5) and torch.equal(two.text_mask, c.text_mask[1:])
    both = Conditioning.cat([c, two])  # (3 + 2) rows, as guidance stacks them
    assert len(both) == 5 and torch.equal(both.text[3:], two.text) and torch.equal(both.text_mask[:3], c.text_mask)


def test_with_text_replaces_the_chosen_rows_from_a_one_row_conditioning():
    c, empty = cond(), cond(b=1, fill=7)
    dropped = c.with_text(torch.tensor([False, True, False]), empty)
    assert torch.equal(dropped.text[0], c.text[0]) and torch.equal(dropped.text[2], c.text[2])
    assert (dropped.text[1] == 7).all() and torch.equal(dropped.text_mask[1], empty.text_mask[0])


def test_to_casts_floats_and_keeps_masks_bool():
    half = cond().to(dtype=torch.float16)
    assert half.text.dtype == torch.float16 and half.text_mask.dtype == torch.bool
