"""What a run shows: figures (:mod:`.plots`), tables and their names (:mod:`.tables`), sliders
for JupyterLab (:mod:`.sliders`), the claims report (:mod:`.claims`) and ``make reproduce``
(:mod:`.reproduce`)."""
