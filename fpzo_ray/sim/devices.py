"""Device profiles (data, not code) and the virtual clock.

A profile says what a class of device gives to training: a memory budget (MB = 10^6 bytes),
a sustained compute speed, link bandwidths and the probability of being reachable in a
round. A population is a
mix of profiles by fractions; each virtual client gets one profile from the run seed. The
shipped profiles are ``devices.yaml`` beside this file; ``devices.profiles_file`` replaces them.

The virtual clock: a participant's simulated time in a round is
``download_bytes / downlink + flops / speed + upload_bytes / uplink``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fpzo_ray.config import ConfigError, read_yaml, show
from fpzo_ray.seeding import Purpose, derive_seed

if TYPE_CHECKING:
    from fpzo_ray.config import RunConfig

SHIPPED_PROFILES = Path(__file__).with_name("devices.yaml")
_FIELDS = {
    "memory_mb": (0.0, math.inf),
    "flops_per_s": (0.0, math.inf),
    "uplink_mbit_s": (0.0, math.inf),
    "downlink_mbit_s": (0.0, math.inf),
    "availability": (0.0, 1.0),
}


@dataclass(frozen=True)
class DeviceProfile:
    """A class of device: memory budget (MB = 10^6 bytes), compute speed, links,
    availability."""

    name: str
    memory_mb: float
    flops_per_s: float
    uplink_mbit_s: float
    downlink_mbit_s: float
    availability: float

    @property
    def memory_bytes(self) -> float:
        return self.memory_mb * 1e6

    def seconds(self, flops: float, upload_bytes: float, download_bytes: float) -> float:
        """Simulated wall time of one client round on this device."""
        return (
            download_bytes * 8 / (self.downlink_mbit_s * 1e6)
            + flops / self.flops_per_s
            + upload_bytes * 8 / (self.uplink_mbit_s * 1e6)
        )


@dataclass(frozen=True)
class DeviceCatalog:
    """The profiles of a run and the population mix they are drawn from."""

    profiles: tuple[DeviceProfile, ...]
    population: dict[str, float]  # normalised fractions by profile name

    def index(self, name: str) -> int:
        return [p.name for p in self.profiles].index(name)


def load_catalog(
    path: str | Path | None = None, population: Mapping[str, float] | None = None
) -> DeviceCatalog:
    """Profiles from ``path`` (default: the shipped file), and the population mix to use."""
    source = Path(path) if path else SHIPPED_PROFILES
    raw = read_yaml(source, "devices.profiles_file" if path else None)
    where = "devices.profiles_file" if path else "devices"
    profiles = []
    listed = raw.get("profiles") or {}
    mix = population if population is not None else raw.get("population") or {}
    for key, value in (("profiles", listed), ("population", mix)):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config error: {where}: {key}: got {show(value)}, must be a mapping")
    for name, fields in listed.items():
        if not isinstance(fields, Mapping) or set(fields) != set(_FIELDS):
            raise ConfigError(
                f"config error: {where}: profile {name!r} needs exactly {', '.join(_FIELDS)}"
            )
        values = {}
        for key, (low, high) in _FIELDS.items():
            value = fields[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (low < value <= high if key != "availability" else low <= value <= high)
                or not math.isfinite(value)
            ):
                raise ConfigError(
                    f"config error: {where}: {name}.{key}: got {show(value)}, "
                    f"must be a number in {'(0, inf)' if high == math.inf else '[0, 1]'}"
                )
            values[key] = float(value)
        profiles.append(DeviceProfile(str(name), **values))
    if not profiles:
        raise ConfigError(f"config error: {where}: {source} defines no profiles")
    mix = dict(mix)
    names = {p.name for p in profiles}
    for name, share in mix.items():
        if name not in names:
            raise ConfigError(
                f"config error: devices.population: unknown profile {name!r}, "
                f"allowed: {', '.join(sorted(names))}"
            )
        if (
            isinstance(share, bool)
            or not isinstance(share, (int, float))
            or share < 0
            or not math.isfinite(share)
        ):
            raise ConfigError(
                f"config error: devices.population.{name}: got {show(share)}, "
                "must be a finite number >= 0"
            )
    total = sum(mix.values())
    if total <= 0:
        raise ConfigError("config error: devices.population: the fractions must sum to > 0")
    return DeviceCatalog(tuple(profiles), {k: v / total for k, v in mix.items()})


def assign_devices(catalog: DeviceCatalog, num_clients: int, run_seed: int) -> np.ndarray:
    """Each client's profile index, drawn from the population mix (a function of the seed)."""
    names = list(catalog.population)
    rng = np.random.default_rng(derive_seed(run_seed, Purpose.DEVICE))
    picks = rng.choice(len(names), size=num_clients, p=[catalog.population[n] for n in names])
    lookup = np.array([catalog.index(n) for n in names], dtype=np.int64)
    return lookup[picks]


def reachable(
    catalog: DeviceCatalog,
    device_of: np.ndarray,
    run_seed: int,
    round_index: int,
    clients: list[int],
) -> list[bool]:
    """Whether each sampled client answers this round (its profile's availability)."""
    out = []
    for c in clients:
        u = np.random.default_rng(
            derive_seed(run_seed, Purpose.AVAILABILITY, round_index, c)
        ).random()
        out.append(bool(u < catalog.profiles[int(device_of[c])].availability))
    return out


@dataclass(frozen=True)
class ClientDevices:
    """The device of every virtual client of a run."""

    catalog: DeviceCatalog
    device_of: np.ndarray  # profile index per client id

    def profile(self, client_id: int) -> DeviceProfile:
        return self.catalog.profiles[int(self.device_of[client_id])]


def client_devices(cfg: RunConfig) -> ClientDevices | None:
    """The run's client devices, or None when device profiles are off. A function of the
    configuration: the server and every worker build the same table."""
    if not cfg.devices.enabled:
        return None
    catalog = load_catalog(cfg.devices.profiles_file or None, cfg.devices.population)
    return ClientDevices(catalog, assign_devices(catalog, cfg.data.num_clients, cfg.seed))


@dataclass(frozen=True)
class OverBudget:
    """A client whose training peak exceeds its device's memory budget."""

    peak_bytes: int  # the figure held against the budget
    budget_bytes: float

    def message(self) -> str:
        return f"out of memory: peak {self.peak_bytes} B > budget {self.budget_bytes:.0f} B"


@dataclass(frozen=True)
class MemoryGate:
    """Holds each client's training peak against its device's memory budget, the way a
    real device fails when it runs out of memory. ``figure`` (``devices.memory_figure``)
    says which peak: ``sparse`` (the model stored sparsely) or ``dense`` (the simulator's
    dense buffers)."""

    devices: ClientDevices | None
    figure: str = "sparse"

    @classmethod
    def of(cls, cfg: RunConfig) -> MemoryGate:
        return cls(client_devices(cfg), cfg.devices.memory_figure)

    def check(self, client_id: int, dense_bytes: int, sparse_bytes: int) -> OverBudget | None:
        """None when the client fits (or has no device profile)."""
        if self.devices is None:
            return None
        peak = sparse_bytes if self.figure == "sparse" else dense_bytes
        budget = self.devices.profile(client_id).memory_bytes
        return OverBudget(int(peak), budget) if peak > budget else None
