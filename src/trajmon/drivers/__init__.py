"""QCoDeS drivers that ship with trajmon."""
