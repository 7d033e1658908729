"""Object localisation of Appendix A (see docs/LOCALIZATION.md).

``voc`` reads PASCAL VOC annotations, ``boxes`` does box geometry, ``data`` holds photographs
and samples training crops with box targets, ``net`` builds and trains SCR/PCR box-regression
nets, ``merge`` is OverFeat's greedy merging, ``protocol`` applies the nets (centre crop and
dense), ``metrics`` scores them, ``classifier`` is a stopgap classification trainer, ``api``
is what ``verydeep localize`` calls and ``draw`` paints the guesses on a photograph.
"""
