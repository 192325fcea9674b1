"""Transfer learning measured on the user's own data.

- :mod:`edgetl.transfer.twosample`: the two-sample figures (kernel MMD, Frechet distance, a classifier two-sample
  test) and the verdict words;
- :mod:`edgetl.transfer.gap`: ``edgetl gap``, a run's training images against new images, in its own backbone;
- :mod:`edgetl.transfer.adapt`: ``edgetl adapt``, AdaBN into a new run;
- :mod:`edgetl.transfer.reference`: the drift reference a bundle carries (scored on the line by
  :mod:`edgetl.runtime.drift`);
- :mod:`edgetl.transfer.study`: ``edgetl study transfer``, pretrained against random initialisation.
"""
