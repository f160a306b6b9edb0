"""What callbridge says on a call, word for word (the TwiML ``<Say>`` lines the services pick).

Here rather than in the TwiML adapter, because the services choose what is said and the
adapter only writes it down.
"""

APOLOGY = "Sorry, our assistant is not available right now. Please try again later. Goodbye."
NO_INPUT = "We did not receive an answer, so we will hang up now. Goodbye."
OPTED_OUT = "Understood. We will not call this number again. Goodbye."
TRANSFER = "Please hold while I connect you to a person."
DRAINING = "Sorry, we have to end this call now. Goodbye."
