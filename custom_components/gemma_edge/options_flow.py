"""Options of an engine entry: the model's context and threads, images, privacy."""

from __future__ import annotations

from typing import Any

import voluptuous as vol

from homeassistant.config_entries import ConfigFlowResult, OptionsFlow
from homeassistant.helpers.selector import (
    BooleanSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
)

from .const import (
    CONF_CAMERA_MIN_INTERVAL,
    CONF_FLASH_ATTN,
    CONF_IMAGE_MAX_SIDE,
    CONF_KEEP_WORDS,
    CONF_MODEL_SOURCE,
    CONF_N_CTX,
    CONF_THREADS,
    DEFAULT_CAMERA_MIN_INTERVAL,
    DEFAULT_FLASH_ATTN,
    DEFAULT_IMAGE_MAX_SIDE,
    DEFAULT_KEEP_WORDS,
    DEFAULT_N_CTX,
    DEFAULT_THREADS,
    SOURCE_SERVER,
)
from .engine.images import MAX_SIDE, MIN_SIDE

ENGINE_DEFAULTS: dict[str, Any] = {
    CONF_N_CTX: DEFAULT_N_CTX,
    CONF_THREADS: DEFAULT_THREADS,
    CONF_FLASH_ATTN: DEFAULT_FLASH_ATTN,
}
VISION_DEFAULTS: dict[str, Any] = {
    CONF_IMAGE_MAX_SIDE: DEFAULT_IMAGE_MAX_SIDE,
    CONF_CAMERA_MIN_INTERVAL: DEFAULT_CAMERA_MIN_INTERVAL,
}
ACTIVITY_DEFAULTS: dict[str, Any] = {CONF_KEEP_WORDS: DEFAULT_KEEP_WORDS}


class GemmaEdgeOptionsFlow(OptionsFlow):
    """Engine options (context size, threads, flash attention) and image options."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show the engine, image and activity options; save them when submitted."""
        if user_input is not None:
            return self.async_create_entry(data=user_input)
        current = {
            **ENGINE_DEFAULTS,
            **VISION_DEFAULTS,
            **ACTIVITY_DEFAULTS,
            **self.config_entry.data,
            **self.config_entry.options,
        }
        schema = vol.Schema(
            {
                vol.Required(CONF_N_CTX): NumberSelector(
                    NumberSelectorConfig(
                        min=1024, max=131072, step=256, mode=NumberSelectorMode.BOX
                    )
                ),
                vol.Required(CONF_THREADS): NumberSelector(
                    NumberSelectorConfig(
                        min=0, max=64, step=1, mode=NumberSelectorMode.BOX
                    )
                ),
                vol.Required(CONF_FLASH_ATTN): BooleanSelector(),
                vol.Required(
                    CONF_IMAGE_MAX_SIDE, default=DEFAULT_IMAGE_MAX_SIDE
                ): NumberSelector(
                    NumberSelectorConfig(
                        min=MIN_SIDE,
                        max=MAX_SIDE,
                        step=16,
                        mode=NumberSelectorMode.BOX,
                        unit_of_measurement="px",
                    )
                ),
                vol.Required(
                    CONF_CAMERA_MIN_INTERVAL, default=DEFAULT_CAMERA_MIN_INTERVAL
                ): NumberSelector(
                    NumberSelectorConfig(
                        min=0,
                        max=3600,
                        step=1,
                        mode=NumberSelectorMode.BOX,
                        unit_of_measurement="s",
                    )
                ),
                vol.Required(
                    CONF_KEEP_WORDS, default=DEFAULT_KEEP_WORDS
                ): BooleanSelector(),
            }
        )
        if self.config_entry.data.get(CONF_MODEL_SOURCE) == SOURCE_SERVER:
            # threads and flash attention are the server's own settings
            schema = vol.Schema(
                {
                    key: value
                    for key, value in schema.schema.items()
                    if key not in (CONF_THREADS, CONF_FLASH_ATTN)
                }
            )
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                schema,
                {
                    key: current[key]
                    for key in (*ENGINE_DEFAULTS, *VISION_DEFAULTS, *ACTIVITY_DEFAULTS)
                },
            ),
        )
