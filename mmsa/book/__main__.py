"""``python -m mmsa.book run|test|clean|site`` (see ``mmsa.book.runner``)."""
import sys

from mmsa.book.runner import main

sys.exit(main())
