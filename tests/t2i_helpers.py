"""Tiny diffusers text-to-image pipelines with random weights, for tests (importable as ``t2i_helpers``)."""
import json
from pathlib import Path

import torch

from bench.suites import t2i

PROMPTS = ["a red fox in the snow", "a lighthouse in a storm", "a bowl of ramen", "an astronaut on a bicycle",
           "a watercolor canal at sunset", "a cat on a stack of books"]


def _tokenizer(directory: Path):
    """A T5 tokenizer on a sentencepiece model trained here, with T5's special ids (pad 0, eos 1, unk 2)."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    text = (t2i.DEFAULT_PROMPTS.read_text() + "\n".join(PROMPTS)).splitlines()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(directory / "sp"), vocab_size=200,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, model_type="unigram",
                                   minloglevel=2, hard_vocab_limit=False)
    return T5Tokenizer(vocab_file=str(directory / "sp.model"), extra_ids=0, legacy=False)


def build_tiny_pixart(directory: Path, prediction_type="epsilon", scheduler="dpm"):
    """A PixArt-alpha pipeline with every part at toy size (16x16 pixels, 8x8x4 latents)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, PixArtAlphaPipeline
    from diffusers import PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = _tokenizer(directory)
    text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1,
                                           num_heads=2, feed_forward_proj="gated-gelu", pad_token_id=0,
                                           decoder_start_token_id=0))
    transformer = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                           num_layers=1, cross_attention_dim=16, caption_channels=16, sample_size=8,
                                           patch_size=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=8, sample_size=16)
    kwargs = dict(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, prediction_type=prediction_type)
    sched = DPMSolverMultistepScheduler(**kwargs) if scheduler == "dpm" else DDIMScheduler(**kwargs)
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=sched)
    out = directory / f"pixart-{prediction_type}-{scheduler}"
    pipe.save_pretrained(out)
    for part in (text_encoder, transformer, vae):
        part.eval()  # as loaded: no dropout
    return out, pipe


def build_tiny_stable_diffusion(directory: Path):
    """A Stable Diffusion pipeline (UNet, CLIP text encoder, character-level CLIP tokenizer) at toy size."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    torch.manual_seed(0)
    chars = list(bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=16)
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                                bos_token_id=bos, eos_token_id=eos, pad_token_id=eos))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16)
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                       steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out = directory / "sd"
    pipe.save_pretrained(out)
    for part in (text_encoder, unet, vae):
        part.eval()
    return out, pipe
