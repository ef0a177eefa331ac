
from twisted_bcr.faultplugins.bcr_triggers import CountingTrigger
third_shuttle = CountingTrigger("any_shuttle", "shuttle", True)
