from vdcos.scheduler.server import main
import sys

sys.exit(main())
