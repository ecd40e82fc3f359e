"""DI, Diff-Instruct (Luo et al., 2023)."""
import torch

from .base import DI_MODES, LOGNORMAL, Method, Recipe, per_sample_sum


def random_state(device: torch.device):
    """The generator state dropout draws from on ``device``: the CPU one, plus CUDA's on a GPU."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def restore_random_state(state, device: torch.device) -> None:
    """Put back a state taken by ``random_state``."""
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


class DI(Method):
    """``< sg(f_psi(x_t) - f_phi(x_t)), x_g >``: the integral-KL gradient, through ``x_g`` only.

    The expected gradient is ``sigma^2`` times that of KL(q_sigma || p_sigma). The published loss
    already has unit weight in denoiser space, so ``"paper"`` and ``"none"`` coincide.
    As in ``di_loss.py``, teacher and fake score run in train mode during the generator update with
    one dropout mask: the random state is restored between the two calls, so with the fake score
    a copy of the teacher the direction is exactly zero.
    """
    paper = "Luo et al. 2023, Diff-Instruct (NeurIPS)"
    minimises = "integral KL divergence"

    name = "di"
    defaults = {}
    recipe = Recipe(
        sigma_init=1.0,
        generator_sigma=LOGNORMAL,
        fake_sigma=LOGNORMAL,
        lr=1e-5,  # README command of pkulwj1994/diff_instruct (--lr 0.00001 --glr 0.00001)
        optimizer="adam",
        betas=(0.0, 0.999),
        ema_halflife_kimg=500.0,
        dropout=None,  # the teacher's own; di_train.py passes 0.13, EDM's DDPM++ value
        modes=DI_MODES,
        augment_p=0.12,  # di_train.py --augment default (EDM's pipe, xflip at full strength)
        fake_inputs=("augment",),
        published=dict(batch=128, budget_mimg=200, loss_scale=1.0),
    )

    def generator_loss(self, x_g, teacher, fake, cond=None, sigma=None, noise=None, **extra):
        x_t, sigma = self._noised(x_g.detach(), sigma, noise, self.recipe.generator_sigma)
        with torch.no_grad():
            state = random_state(x_t.device)
            f_teacher = teacher(x_t, sigma, cond=cond)
            restore_random_state(state, x_t.device)  # the same dropout mask in both networks
            direction = fake(x_t, sigma, cond=cond) - f_teacher
        loss = per_sample_sum(direction * x_g).mean()
        return loss, {"loss_g": loss.detach(), "direction_rms": direction.pow(2).mean().sqrt()}
