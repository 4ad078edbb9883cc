"""The loader workers' augmentation (`train_transform`) for a whole batch of cached images, on
the device where they lie: the same parameters drawn the same way, the same pixels made.

Each image's random resized crop (the recipe's `crop_scale`, `crop_ratio`), flips, rotation,
zoom, brightness and contrast are drawn as torchvision draws them (the crop within the
image's own stored size, with torchvision's ten tries and central fallback), from a generator
the caller seeds. They are applied as torchvision applies them, batched: the crop resized with
antialiasing, as torchvision's (PIL's) separable filter does it, written as one matrix per
axis and image (the filter's weights over the canvas, zero outside the crop; a flip reverses
the matrix's rows), so the whole batch resizes in two matrix products; the result rounded to
uint8 values; RandomAffine's rotation and zoom about the centre by `grid_sample` with nearest
neighbours and a fill of 0, as torchvision's affine; brightness and contrast as ColorJitter
computes them on uint8, in the order it picks per image. Out come uint8 images at the model's
size, equal to the workers' up to a rounding (their uint8 resize is fixed-point).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional
from torchvision.transforms.v2 import InterpolationMode

from medft.config import DataArguments
from medft.data.transforms import InputSpec

CROP_TRIES = 10  # torchvision's RandomResizedCrop tries ten crops before its central fallback

Params = dict[str, torch.Tensor]


class BatchAugment:
    """``augment(images, sizes, generator)``: uint8 images (n, c, H, W), each image's stored
    (height, width) at the top left -> uint8 (n, 3, model height, model width)."""

    def __init__(self, spec: InputSpec, augment: DataArguments) -> None:
        self.size = spec.size
        self.interpolation = spec.interpolation
        self.crop_scale = tuple(augment.crop_scale)
        self.crop_ratio = tuple(augment.crop_ratio)
        self.flips = (augment.horizontal_flip, augment.vertical_flip)
        self.degrees, self.zoom = augment.rotation_degrees, augment.zoom
        self.brightness, self.contrast = augment.brightness, augment.contrast

    def __call__(
        self, images: torch.Tensor, sizes: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        return self.apply(images, self.draw(sizes, generator))

    # drawing ------------------------------------------------------------------------------

    def draw(self, sizes: torch.Tensor, generator: torch.Generator) -> Params:
        """Each image's parameters: crop (top, left, height, width), hflip, vflip, angle, zoom,
        brightness, contrast, contrast_first."""
        n, device = len(sizes), sizes.device

        def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
            values = torch.rand(shape or (n,), generator=generator, device=device)
            return low + (high - low) * values

        params = self.draw_crops(sizes.double(), uniform)
        params["hflip"] = uniform(0, 1) < self.flips[0]
        params["vflip"] = uniform(0, 1) < self.flips[1]
        params["angle"] = uniform(-self.degrees, self.degrees)
        params["zoom"] = uniform(1 - self.zoom, 1 + self.zoom)
        params["brightness"] = uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)
        params["contrast"] = uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)
        params["contrast_first"] = uniform(0, 1) < 0.5
        return params

    def draw_crops(self, sizes: torch.Tensor, uniform) -> Params:
        """torchvision's RandomResizedCrop.make_params for every image at once: ten tries of
        area and log-uniform aspect ratio each, the first that fits kept, else the central
        crop with the ratio brought into range."""
        height, width = sizes[:, 0], sizes[:, 1]
        area = (height * width)[:, None]
        scale = uniform(*self.crop_scale, len(sizes), CROP_TRIES)
        log_ratio = uniform(*map(math.log, self.crop_ratio), len(sizes), CROP_TRIES)
        ratio = log_ratio.exp()
        tried_w = (area * scale * ratio).sqrt().round()
        tried_h = (area * scale / ratio).sqrt().round()
        fits = (tried_w > 0) & (tried_w <= width[:, None]) & (tried_h > 0)
        fits &= tried_h <= height[:, None]
        first = fits.byte().argmax(dim=1, keepdim=True)
        found = fits.any(dim=1)
        low, high = min(self.crop_ratio), max(self.crop_ratio)
        shape = width / height
        fallback_w = torch.where(shape > high, (height * high).round(), width)
        fallback_h = torch.where(shape < low, (width / low).round(), height)
        crop_w = torch.where(found, tried_w.gather(1, first)[:, 0], fallback_w)
        crop_h = torch.where(found, tried_h.gather(1, first)[:, 0], fallback_h)
        top = torch.where(
            found, (uniform(0, 1) * (height - crop_h + 1)).floor(), ((height - crop_h) / 2).floor()
        )
        left = torch.where(
            found, (uniform(0, 1) * (width - crop_w + 1)).floor(), ((width - crop_w) / 2).floor()
        )
        return {"top": top, "left": left, "height": crop_h, "width": crop_w}

    # applying -----------------------------------------------------------------------------

    def apply(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """torchvision's steps on the drawn parameters; uint8 out, three channels."""
        pixels = self.resized_crops(images.float(), params)
        if self.degrees or self.zoom:
            pixels = functional.grid_sample(
                pixels,
                self.affine_grid(params),
                mode="nearest",
                padding_mode="zeros",
                align_corners=False,
            )
        out = self.jitter(pixels, params).to(torch.uint8)
        return out.expand(-1, 3, -1, -1) if out.shape[1] == 1 else out

    def resized_crops(self, images: torch.Tensor, params: Params) -> torch.Tensor:
        """Each crop resized to the model's size (flips folded in), rounded as uint8 is."""
        (height, width), (canvas_h, canvas_w) = self.size, images.shape[-2:]
        rows = resize_weights(params["top"], params["height"], height, canvas_h, self.interpolation)
        columns = resize_weights(
            params["left"], params["width"], width, canvas_w, self.interpolation
        )
        rows = torch.where(params["vflip"].view(-1, 1, 1), rows.flip(1), rows)
        columns = torch.where(params["hflip"].view(-1, 1, 1), columns.flip(1), columns)
        resized = rows[:, None] @ images @ columns[:, None].transpose(-1, -2)
        return resized.round_().clamp_(0, 255)

    def affine_grid(self, params: Params) -> torch.Tensor:
        """Where each output pixel takes its value under RandomAffine's rotation and zoom
        (torchvision's inverse matrix, in pixels about the centre), in grid_sample's [-1, 1]."""
        device, dtype = params["angle"].device, torch.float32
        height, width = self.size
        u = ((torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1).view(1, 1, -1)
        v = ((torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1).view(1, -1, 1)
        angle = params["angle"].to(dtype).deg2rad().view(-1, 1, 1)
        zoom = params["zoom"].to(dtype).view(-1, 1, 1)
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        x = cos * u + sin * (height / width) * v
        y = cos * v - sin * (width / height) * u
        return torch.stack([x, y], dim=-1)

    def jitter(self, pixels: torch.Tensor, params: Params) -> torch.Tensor:
        """ColorJitter's brightness and contrast on uint8 values (each step truncated to
        uint8, as torchvision's blend does), each image in its own order."""
        if not (self.brightness or self.contrast):
            return pixels
        brightness = params["brightness"].to(pixels.dtype).view(-1, 1, 1, 1)
        contrast = params["contrast"].to(pixels.dtype).view(-1, 1, 1, 1)

        def brighten(values):
            return (values * brightness).clamp_(0, 255).floor_() if self.brightness else values

        def contrasted(values):
            if not self.contrast:
                return values
            mean = grey_of(values).mean(dim=(1, 2, 3), keepdim=True)
            return (values * contrast + mean * (1 - contrast)).clamp_(0, 255).floor_()

        first = params["contrast_first"].view(-1, 1, 1, 1)
        once = torch.where(first, contrasted(pixels), brighten(pixels))
        return torch.where(first, brighten(once), contrasted(once))


def resize_weights(
    start: torch.Tensor, length: torch.Tensor, out: int, canvas: int, mode: InterpolationMode
) -> torch.Tensor:
    """(n, out, canvas): output pixel i of each image as a weighted sum of canvas pixels,
    resizing [start, start + length) to ``out`` as torchvision's antialiased resize does (its
    kernel stretched by the shrink factor, cut at the crop's ends and renormalised); nearest
    neighbours take pixel floor(i * length / out)."""
    device = start.device
    scale = (length / out).view(-1, 1, 1)
    place = torch.arange(canvas, device=device, dtype=scale.dtype).view(1, 1, -1)
    place = place - start.view(-1, 1, 1)  # canvas pixel, counted from the crop's start
    index = torch.arange(out, device=device, dtype=scale.dtype).view(1, -1, 1)
    if mode == InterpolationMode.NEAREST:
        weights = (place == (index * scale).floor()).to(scale.dtype)
    else:
        centre = (index + 0.5) * scale
        stretch = torch.where(scale > 1, 1 / scale, torch.ones_like(scale))
        distance = ((place - centre + 0.5) * stretch).abs()
        weights = (triangle if mode == InterpolationMode.BILINEAR else cubic)(distance)
        weights = weights * ((place >= 0) & (place < length.view(-1, 1, 1)))
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.float()


def triangle(distance: torch.Tensor) -> torch.Tensor:
    return (1 - distance).clamp(min=0)


def cubic(distance: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """The bicubic kernel of PIL and torchvision's antialiased resize (any other
    interpolation a processor names, Lanczos, box or Hamming, resizes bicubic here)."""
    near = ((a + 2) * distance - (a + 3)) * distance**2 + 1
    far = ((distance - 5) * distance + 8) * distance * a - 4 * a
    return torch.where(distance < 1, near, torch.where(distance < 2, far, 0))


def grey_of(pixels: torch.Tensor) -> torch.Tensor:
    """torchvision's greyscale of uint8 values, floored, which contrast blends towards (for
    one channel: of three equal ones, as the workers see a greyscale image)."""
    red, green, blue = pixels.unbind(1) if pixels.shape[1] == 3 else (pixels[:, 0],) * 3
    return red.mul(0.2989).add_(green, alpha=0.587).add_(blue, alpha=0.114).floor_()[:, None]
