import sys

from ganport.cli import main

sys.exit(main())
