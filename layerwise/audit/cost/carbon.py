"""CO2e from energy: energy (kWh) x PUE x grid carbon intensity (kg CO2e / kWh).

PUE (power usage effectiveness) scales the IT energy measured at the device to what the
facility draws (cooling, power conversion); 1.0 for a laptop, ~1.1-1.6 for data centres
(Uptime Institute's 2023 survey average is ~1.58).
"""

# Carbon intensity of electricity generation, g CO2e per kWh, yearly averages for 2023
# (lifecycle emissions), rounded to the gram: Ember, "Yearly electricity data" (2024 release),
# https://ember-energy.org/data/yearly-electricity-data/, as republished by Our World in
# Data ("Carbon intensity of electricity generation"). Figures were transcribed by hand;
# pass intensity= (or --grid-intensity) where a precise or more recent figure matters.
GRID_INTENSITY_G_PER_KWH = {
    "WORLD": 481,
    "AU": 548, "BR": 98, "CA": 171, "CN": 582, "DE": 381, "ES": 174, "FR": 56, "GB": 238,
    "IE": 282, "IN": 713, "IT": 331, "JP": 485, "KR": 432, "NL": 268, "NO": 30, "PL": 662,
    "SE": 41, "CH": 35, "US": 369, "ZA": 709, "RU": 441, "MX": 423, "ID": 676, "SG": 470,
    "FI": 79, "DK": 151, "AT": 113, "BE": 138, "PT": 165,
}
INTENSITY_SOURCE = "Ember yearly electricity data 2023 (via Our World in Data), lifecycle"
DEFAULT_PUE = 1.0
J_PER_KWH = 3.6e6


def grid_intensity(country=None, intensity=None):
    """(kg CO2e per kWh, source text): an explicit figure wins, else the country's, else world."""
    if intensity is not None:
        value = float(intensity)
        if value < 0:
            raise ValueError(f"grid intensity must be >= 0 g/kWh, got {intensity!r}")
        return value / 1000, "user-supplied"
    code = (country or "WORLD").upper()
    if code not in GRID_INTENSITY_G_PER_KWH:
        raise ValueError(f"no grid intensity for country {country!r}; use an ISO 3166 alpha-2 "
                         f"code from {sorted(GRID_INTENSITY_G_PER_KWH)} or pass the intensity "
                         "in g/kWh")
    where = "world average" if code == "WORLD" else code
    return GRID_INTENSITY_G_PER_KWH[code] / 1000, f"{INTENSITY_SOURCE}, {where}"


def emissions_record(energy, pue=DEFAULT_PUE, country=None, intensity=None):
    """The full record from an EnergyMeter reading ({'duration_s', 'components'}).

    ``*_energy_kwh`` are what the devices drew; ``energy_kwh`` includes the PUE overhead, and
    ``emissions_kg`` = energy_kwh x intensity.
    """
    if pue < 1:
        raise ValueError(f"PUE is facility energy / IT energy, so >= 1; got {pue!r}")
    kg_per_kwh, source = grid_intensity(country, intensity)
    duration = float(energy["duration_s"])
    record = {"duration_s": duration, "pue": float(pue), "grid_intensity_kg_per_kwh": kg_per_kwh,
              "grid_intensity_source": source, "country": (country or "WORLD").upper(),
              "components": {}}
    it_kwh = 0.0
    for name, c in energy["components"].items():
        kwh = c["joules"] / J_PER_KWH
        it_kwh += kwh
        record["components"][name] = {
            "energy_kwh": kwh, "method": c["method"],
            "power_w": c["joules"] / duration if duration > 0 else 0.0}
    record["it_energy_kwh"] = it_kwh
    record["energy_kwh"] = it_kwh * pue
    record["emissions_kg"] = record["energy_kwh"] * kg_per_kwh
    return record
