"""The areas of the demo home, in the tests (conftest's ``demo_home``) and in the development
home (scripts/develop): Home Assistant's demo integration with areas, as a user's home looks.
The demo's media players, humidifiers, locks and valves have no unique id, so no area."""

DEMO_AREAS = {
    "Kitchen": ("light.kitchen_lights", "cover.kitchen_window"),
    "Living Room": (
        "light.ceiling_lights", "light.living_room_rgbww_lights", "fan.living_room_fan", "fan.ceiling_fan",
        "cover.living_room_window",
    ),
    "Bedroom": ("light.bed_light",),
    "Garage": ("cover.garage_door",),
}  # fmt: skip
