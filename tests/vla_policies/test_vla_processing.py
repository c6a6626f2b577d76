"""The processor: prompt template, batch layout, prompt cache and image transforms."""

from __future__ import annotations

import pytest
import torch

from vla_policies import OpenVLAOFTProcessor


def test_prompt_template_and_trailing_empty_token(processor):
    prompt = processor.build_prompt("Pick up the Cup")
    assert prompt == "In: What action should the robot take to pick up the cup?\nOut: "
    ids = processor.encode_instruction("Pick up the Cup")
    assert ids[0] == 1 and ids[-1] == processor.tokenizer.empty_token_id  # BOS ... "▁"
    assert processor.encode_instruction("Pick up the Cup") is ids  # cached


def test_batch_layout_bos_then_left_padding(processor):
    ids, mask = processor.tokenize(["go", "open the drawer"])
    long = processor.encode_instruction("open the drawer")
    short = processor.encode_instruction("go")
    assert ids.shape == mask.shape == (2, len(long))
    assert ids[:, 0].tolist() == [1, 1] and mask[:, 0].tolist() == [1, 1]
    pad = len(long) - len(short)
    assert mask[0, 1:1 + pad].sum() == 0 and torch.all(ids[0, 1:1 + pad] == processor.pad_token_id)
    assert ids[0, 1 + pad:].tolist() == short[1:] and ids[1].tolist() == long


def test_image_transforms_per_tower(processor):
    images = torch.full((2, 3, 3, 224, 224), 255, dtype=torch.uint8)
    pix = processor.preprocess_images(images)
    assert pix.shape == (2, 18, 224, 224)
    dino = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(pix[0, :3, 0, 0], dino)  # image 0, DINOv2 copy
    torch.testing.assert_close(pix[0, 3:6, 0, 0], torch.ones(3))  # image 0, SigLIP copy: (1 - 0.5) / 0.5
    torch.testing.assert_close(pix[1, 12:15, 5, 5], dino)  # image 2, DINOv2 copy
    # other sizes are resized (bicubic, 8-bit rounding); float input 0..255 works too
    small = processor.preprocess_images(torch.randint(0, 256, (1, 3, 3, 48, 64)).float())
    assert small.shape == (1, 18, 224, 224)
    with pytest.raises(ValueError, match=r"\[B, N, 3, H, W\]"):
        processor.preprocess_images(torch.zeros(1, 3, 4, 8, 8))


def test_center_crop_keeps_the_middle(tiny_config):
    proc = OpenVLAOFTProcessor.from_config(tiny_config, center_crop=0.25)  # half of each side
    img = torch.zeros(1, 1, 3, 224, 224, dtype=torch.uint8)
    img[..., 56:168, 56:168] = 255
    pix = proc.preprocess_images(img)
    torch.testing.assert_close(pix[0, 3:6], torch.ones(3, 224, 224))  # only the white centre remains


def test_sentencepiece_only_checkpoint_tokenizer(tmp_path, tiny_config):
    spm = pytest.importorskip("sentencepiece")
    corpus = [f"In: What action should the robot take to {t}?\nOut: " for t in ("pick up the red cup", "stack it")] * 40
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=300, model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   bos_id=1, eos_id=2, unk_id=0, pad_id=-1, remove_extra_whitespaces=False,
                                   minloglevel=2)
    (tmp_path / "tokenizer.vocab").unlink()
    tiny_config.save_pretrained(tmp_path)
    proc = OpenVLAOFTProcessor.from_pretrained(tmp_path)  # no tokenizer.json, no preprocessor_config.json
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    ids = proc.encode_instruction("Stack it")
    expected = [1] + sp.encode("In: What action should the robot take to stack it?\nOut: ")
    assert ids[:len(expected)] == expected and ids[-1] == sp.piece_to_id("\u2581")
    proc.save_pretrained(tmp_path / "again")
    assert (tmp_path / "again" / "tokenizer.model").read_bytes() == (tmp_path / "tokenizer.model").read_bytes()
