"""The MAVEN model: eager reference of the three variants (see :mod:`maven_fast.model.maven`)."""
from maven_fast.config import MavenConfig
from maven_fast.model.cross_modal import PATHWAYS, CrossModalAttention
from maven_fast.model.inputs import MavenInputError
from maven_fast.model.maven import MAVEN
from maven_fast.model.outputs import MavenOutput

__all__ = ["MAVEN", "MavenConfig", "MavenOutput", "MavenInputError", "CrossModalAttention", "PATHWAYS"]
