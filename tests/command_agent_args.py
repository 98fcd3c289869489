"""Command arguments shared by the agent's command tests."""

TARIFF = {"name": "TOU-2026", "activate": 1798761600,          # 2027-01-01T00:00:00Z
          "seasons": [{"name": "winter", "start": "10-01", "week": "wd"},
                      {"name": "summer", "start": "04-01", "week": "wd"}],
          "weeks": [{"name": "wd", "days": [1, 1, 1, 1, 1, 2, 2]}],
          "days": [{"id": 1, "actions": [{"start": "00:00", "tariff": 2},
                                         {"start": "07:00", "tariff": 1},
                                         {"start": "23:00:00", "tariff": 2}]},
                   {"id": 2, "actions": [{"start": "00:00", "tariff": 2}]}]}
