"""After training, how good is the model: one split's scores evaluated (`evaluate`:
metrics, `thresholds`, `bootstrap` intervals, `calibration`, `subgroups`), and the
report rendered as files, figures (`plots`), text (`reporting`) and the model `card`."""
