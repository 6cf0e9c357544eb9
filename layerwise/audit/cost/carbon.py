"""CO2e from energy: energy (kWh) x PUE x grid carbon intensity (kg CO2e / kWh).

PUE (power usage effectiveness) scales the IT energy measured at the device to what the
facility draws (cooling, power conversion); 1.0 for a laptop, ~1.1-1.6 for data centres
(Uptime Institute's 2023 survey average is ~1.58).
"""

# Carbon intensity of electricity generation, g CO2e per kWh generated (lifecycle emissions,
# production mix, imports not counted), yearly averages for 2023, rounded to the gram.
#
# Source: Our World in Data, "Carbon intensity of electricity generation, 1990 to 2023"
# (data: Ember and Energy Institute), table view of
# https://ourworldindata.org/grapher/carbon-intensity-electricity, as published with data to
# 2023 (OWID has since moved to later Ember releases, which revise past years a little).
# WORLD (481), PL (662) and SE (40.7 -> 41) are Ember's 2023 figures as quoted by Statista
# ("Electricity generation emission intensity ... 2023", Ember, 3 July 2024).
# The codes in CHECKED were compared with those pages; five were corrected then (AU 548 -> 549,
# AT 113 -> 111, CA 171 -> 170, DK 151 -> 152, IE 282 -> 291). The others were typed from memory
# and could not be checked against a source: treat them as approximate (the record says so),
# and pass intensity= (or --grid-intensity) where a precise or more recent figure matters.
GRID_INTENSITY_G_PER_KWH = {
    "WORLD": 481,
    "AU": 549, "BR": 98, "CA": 170, "CN": 582, "DE": 381, "ES": 174, "FR": 56, "GB": 238,
    "IE": 291, "IN": 713, "IT": 331, "JP": 485, "KR": 432, "NL": 268, "NO": 30, "PL": 662,
    "SE": 41, "CH": 35, "US": 369, "ZA": 709, "RU": 441, "MX": 423, "ID": 676, "SG": 470,
    "FI": 79, "DK": 152, "AT": 111, "BE": 138, "PT": 165,
}
CHECKED = frozenset({"WORLD", "AU", "AT", "BE", "BR", "CA", "CN", "DK", "FI", "FR", "DE", "IN",
                     "IE", "NO", "PL", "SE"})
INTENSITY_SOURCE = ("Ember 2023 via Our World in Data, 'Carbon intensity of electricity "
                    "generation', lifecycle")
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
    if code not in CHECKED:
        where += " (approximate: not checked against the source)"
    return GRID_INTENSITY_G_PER_KWH[code] / 1000, f"{INTENSITY_SOURCE}, {where}"


def emissions_record(energy, pue=DEFAULT_PUE, country=None, intensity=None):
    """The full record from an EnergyMeter reading ({'duration_s', 'components'}).

    ``*_energy_kwh`` are what the devices drew; ``energy_kwh`` includes the PUE overhead, and
    ``emissions_kg`` = energy_kwh x intensity. ``warnings`` names every component whose energy
    was estimated rather than measured, so the fallback stays on record after the run (the
    runtime warning of ``default_sources`` is gone once the process ends).
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
    record["warnings"] = [f"{name} energy is an estimate ({c['method']}): no meter was readable"
                          for name, c in record["components"].items()
                          if "estimate" in c["method"]]
    record["it_energy_kwh"] = it_kwh
    record["energy_kwh"] = it_kwh * pue
    record["emissions_kg"] = record["energy_kwh"] * kg_per_kwh
    return record
