"""``FleetConfig``, the whole fleet as one pydantic-settings model, and where its values come from: ``ALGO_*``
environment variables, systemd credentials (secrets only), the TOML file, the defaults (highest first)."""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    SecretStr,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .daemon_sections import CommanderSection, DaemonsSection, GatewaySection
from .sections import (
    BusSection,
    ControlPlaneSection,
    EodSection,
    FleetSection,
    KiteSection,
    MarketSection,
    MetricsSection,
    PortfolioSection,
    PremarketSection,
)


@dataclass(frozen=True)
class _LoadContext:
    file_data: dict[str, Any]
    credentials_dir: Path | None


_CONTEXT: ContextVar[_LoadContext] = ContextVar("algo_config_load")


class FleetConfig(BaseSettings):
    """The whole fleet. One file describes every daemon so conflicts are caught in one place."""

    model_config = SettingsConfigDict(
        env_prefix="ALGO_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    fleet: FleetSection = FleetSection()
    market: MarketSection = MarketSection()
    bus: BusSection = BusSection()
    metrics: MetricsSection = MetricsSection()
    daemons: DaemonsSection = DaemonsSection()
    premarket: PremarketSection = PremarketSection()
    eod: EodSection = EodSection()
    gateway: GatewaySection = GatewaySection()
    # [[portfolios]]: none = every signal is sized by its strategy, as without portfolios
    portfolios: list[PortfolioSection] = []
    commander: CommanderSection = CommanderSection()
    control_plane: ControlPlaneSection = ControlPlaneSection()
    kite: KiteSection = KiteSection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        ctx = _CONTEXT.get(_LoadContext({}, None))
        return (
            init_settings,
            env_settings,
            CredentialsSource(settings_cls, ctx.credentials_dir),
            InitSettingsSource(settings_cls, ctx.file_data),
        )


def secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Dotted paths of every SecretStr field; each maps to a credential named with underscores."""
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from secret_paths(ann, prefix + (name,))
        elif SecretStr in getattr(ann, "__args__", (ann,)):
            yield prefix + (name,)


def credential_name(path: tuple[str, ...]) -> str:
    return "_".join(path)


class CredentialsSource(PydanticBaseSettingsSource):
    """Reads secrets from systemd's $CREDENTIALS_DIRECTORY (LoadCredential=/LoadCredentialEncrypted=)."""

    def __init__(self, settings_cls: type[BaseSettings], directory: Path | None) -> None:
        super().__init__(settings_cls)
        self.directory = directory

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ does the whole tree at once

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.directory is None:
            return out
        for path in secret_paths(self.settings_cls):
            file = self.directory / credential_name(path)
            if not file.is_file():
                continue
            value = file.read_text().strip()
            node = out
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return out
